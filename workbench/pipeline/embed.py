"""Pluggable text embedders loaded from local paths.

Nothing is ever downloaded: a spec names a directory on this machine (``WORKBENCH_EMBED_MODEL``
or a pipeline param), and a missing directory is a clear ``PermanentError``, not a silent trip to
the Hugging Face hub (which model2vec would otherwise attempt for a path that does not exist).

Specs: ``/path/to/model`` or ``model2vec:/path`` (a model2vec StaticModel), ``st:/path``
(sentence-transformers, only if that package is installed).
"""

from __future__ import annotations

import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from workbench.core.errors import PermanentError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors: ``encode`` returns float32 of shape ``(len(texts), dim)``."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _unavailable(message: str) -> PermanentError:
    # error_type groups these failures in the ledger without a new class in errors.py.
    return PermanentError(message, error_type="embed_model_unavailable")


class Model2VecEmbedder:
    """A model2vec ``StaticModel`` loaded from a local directory (fast, CPU-only, no torch)."""

    def __init__(self, path: str | Path, *, normalize: bool | None = None) -> None:
        from model2vec import StaticModel

        folder = _local_dir(path, required=("config.json", "tokenizer.json"))
        try:
            self.model = StaticModel.from_pretrained(
                folder, normalize=normalize, force_download=False
            )
        except Exception as exc:
            raise _unavailable(
                f"could not load the model2vec model at {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        self.path = folder
        self.name = f"model2vec:{folder.name}"
        self.dim = int(self.model.dim)
        self._lock = threading.Lock()  # the Rust tokenizer's truncation state is per model

    def __repr__(self) -> str:
        return f"Model2VecEmbedder({str(self.path)!r}, dim={self.dim})"

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            # use_multiprocessing=False: we are already in a worker or pool process.
            out = self.model.encode(list(texts), use_multiprocessing=False, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory (needs ``sentence_transformers``)."""

    def __init__(self, path: str | Path, *, device: str | None = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _unavailable(
                "the st: embedder needs the sentence-transformers package, which is not installed"
            ) from exc
        folder = _local_dir(path, required=())
        try:
            self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise _unavailable(
                f"could not load the sentence-transformers model at {folder}: {exc}"
            ) from exc
        self.path = folder
        self.name = f"st:{folder.name}"
        dim = self.model.get_sentence_embedding_dimension()
        self.dim = int(dim) if dim else int(self.model.encode(["x"]).shape[1])

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({str(self.path)!r}, dim={self.dim})"

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)


def sentence_transformers_available() -> bool:
    if "sentence_transformers" in sys.modules:
        return True
    import importlib.util

    return importlib.util.find_spec("sentence_transformers") is not None


@lru_cache(maxsize=8)
def load_embedder(spec: str) -> Embedder:
    """The embedder for ``spec`` (a local path, ``model2vec:/path`` or ``st:/path``), loaded once
    per process."""
    if not spec or not spec.strip():
        raise _unavailable(
            "no embedding model configured: "
            "set WORKBENCH_EMBED_MODEL to a local model2vec directory"
        )
    kind, sep, rest = spec.strip().partition(":")
    # "C:\\models\\x" is a path, not a prefix: prefixes are longer than one letter.
    if sep and kind in ("model2vec", "m2v"):
        return Model2VecEmbedder(rest)
    if sep and kind in ("st", "sentence-transformers"):
        return SentenceTransformerEmbedder(rest)
    return Model2VecEmbedder(spec.strip())


def embed_texts(spec: str, texts: list[str]) -> np.ndarray:
    """``load_embedder(spec).encode(texts)``: a top-level function to run in the CPU pool."""
    return load_embedder(spec).encode(texts)


def _local_dir(path: str | Path, *, required: tuple[str, ...]) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise _unavailable(
            f"embedding model directory {str(folder)!r} does not exist: set WORKBENCH_EMBED_MODEL "
            "(or the pipeline's model param) to a local model directory; nothing is downloaded"
        )
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise _unavailable(f"{folder} is not a model2vec model: missing {', '.join(missing)}")
    return folder.resolve()
