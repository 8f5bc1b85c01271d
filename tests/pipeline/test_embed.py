"""Embedders from local paths, with a tiny model2vec model built in the test (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.core.codec import decode_array, encode_array, is_encoded_array
from workbench.core.errors import PermanentError
from workbench.pipeline.cpu import CpuPool
from workbench.pipeline.embed import (
    Embedder,
    Model2VecEmbedder,
    embed_texts,
    load_embedder,
    sentence_transformers_available,
)

WORDS = [
    "the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "library", "book", "read",
    "quiet", "loud",
]
DIM = 16


def build_tiny_model(folder: Path, *, normalize: bool = True, seed: int = 0) -> Path:
    """A word-level model2vec model: a tokenizers WordLevel vocabulary and a random matrix."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.random.default_rng(seed).standard_normal((len(vocab), DIM)).astype(np.float32)
    StaticModel(vectors, tokenizer, normalize=normalize).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model2vec"))


def test_encode_shape_dtype_and_protocol(model_dir: Path) -> None:
    emb = load_embedder(str(model_dir))
    assert isinstance(emb, Model2VecEmbedder) and isinstance(emb, Embedder)
    assert emb.dim == DIM and emb.name == f"model2vec:{model_dir.name}"
    out = emb.encode(["The cat sat on the mat", "a dog ran under a rug", "read a quiet book"])
    assert out.dtype == np.float32 and out.shape == (3, DIM)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # the model normalises
    assert emb.encode([]).shape == (0, DIM)


def test_encode_is_deterministic_and_meaningful(model_dir: Path) -> None:
    emb = load_embedder(str(model_dir))
    texts = ["the cat sat on the mat", "THE CAT SAT ON THE MAT", "loud library"]
    a, b = emb.encode(texts), emb.encode(texts)
    assert np.array_equal(a, b)
    assert np.allclose(a[0], a[1])  # the tokenizer lowercases
    assert not np.allclose(a[0], a[2])
    assert not emb.encode(["zebra xylophone"]).any()  # out-of-vocabulary words only: zeros


def test_load_embedder_specs_and_cache(model_dir: Path) -> None:
    plain = load_embedder(str(model_dir))
    assert load_embedder(str(model_dir)) is plain  # cached per process
    prefixed = load_embedder(f"model2vec:{model_dir}")
    assert isinstance(prefixed, Model2VecEmbedder)
    assert np.allclose(prefixed.encode(["cat"]), plain.encode(["cat"]))


def test_missing_model_is_a_clear_error_not_a_download(tmp_path: Path) -> None:
    # model2vec would try the Hugging Face hub for a path that does not exist; we must not.
    with pytest.raises(PermanentError, match="does not exist") as info:
        load_embedder(str(tmp_path / "no-such-model"))
    assert info.value.error_type == "embed_model_unavailable"
    with pytest.raises(PermanentError, match="WORKBENCH_EMBED_MODEL"):
        load_embedder("")
    with pytest.raises(PermanentError, match="missing"):
        load_embedder(str(tmp_path))  # a directory, but not a model


@pytest.mark.skipif(sentence_transformers_available(), reason="sentence-transformers is installed")
def test_st_prefix_without_sentence_transformers(model_dir: Path) -> None:
    with pytest.raises(PermanentError, match="sentence-transformers"):
        load_embedder(f"st:{model_dir}")


async def test_embed_in_cpu_pool(model_dir: Path) -> None:
    pool = CpuPool(1)
    try:
        out = await pool.run(embed_texts, str(model_dir), ["the cat sat", "a dog ran"])
    finally:
        pool.close()
    assert out.shape == (2, DIM) and out.dtype == np.float32
    assert np.allclose(out, load_embedder(str(model_dir)).encode(["the cat sat", "a dog ran"]))


@pytest.mark.parametrize("shape", [(384,), (3, 16), (0, 8), ()])
def test_array_round_trip(shape: tuple[int, ...]) -> None:
    arr = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    obj = encode_array(arr)
    assert json.loads(json.dumps(obj)) == obj and is_encoded_array(obj)
    assert obj["dtype"] == "float32" and obj["shape"] == list(shape)
    back = decode_array(obj)
    assert back.dtype == np.float32 and back.shape == shape
    assert np.array_equal(back, arr)
    back[...] = 0  # a writable copy


def test_encode_array_layout() -> None:
    import base64

    obj = encode_array(np.array([1.0, -2.0], dtype=np.float64))  # floats stored as float32
    assert base64.b64decode(obj["__ndarray__"]) == np.array([1.0, -2.0], dtype="<f4").tobytes()
    big_endian = np.array([1.5, 2.5], dtype=">f4")
    assert np.array_equal(decode_array(encode_array(big_endian)), big_endian)
    ints = encode_array(np.arange(4, dtype=np.int64), dtype=None)
    assert ints["dtype"] == "int64" and decode_array(ints).tolist() == [0, 1, 2, 3]


def test_decode_array_rejects_bad_input() -> None:
    good = encode_array(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="needs"):
        decode_array({**good, "shape": [5]})
    with pytest.raises(ValueError, match="refusing"):
        decode_array({**good, "dtype": "object"})
    with pytest.raises(ValueError):
        decode_array({"dtype": "float32", "shape": [1]})
    with pytest.raises(ValueError):
        decode_array({**good, "__ndarray__": "not base64!"})
    with pytest.raises(TypeError):
        encode_array(np.array(["a", "b"]), dtype=None)
