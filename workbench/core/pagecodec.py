"""A page body as the page store keeps it: compressed, named by its SHA-256.

Bodies are compressed with zstd (level 3); each blob says its codec by its first bytes (a zstd
frame starts with the magic number ``28 b5 2f fd``, a zlib stream with ``78``), so blobs stored
with zlib before stay readable and no column records the codec. Measured on the 181 pages of the
article-extraction-benchmark corpus (170 KB on average, one core of the loaded 2-core machine):
zlib level 6 (before) 3.75 ms/page, ratio 0.197; zlib 1 1.38 ms, 0.235; zstd 1 0.51 ms, 0.209;
zstd 3 0.66-0.75 ms, 0.197 (zstd decompresses in 0.26 ms).

Pure bytes in, bytes out, so it runs wherever the body already is: the ``article`` pipeline has
its extraction process compress and hash the page it extracts (``stored_body``), which takes
both off the worker's event loop (``Context.fetch(defer_store=True)``).
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from typing import NamedTuple

import zstandard

#: zstd level 3: zlib 6's ratio at a fifth of its time (see the module docstring)
ZSTD_LEVEL = 3
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_codecs = threading.local()  # zstd (de)compressors are not thread-safe: one per thread


class StoredBody(NamedTuple):
    """A body's SHA-256 (hex) and its compressed blob: what the page store writes."""

    sha256: str
    blob: bytes


def compress_page(body: bytes) -> bytes:
    """A page body as stored: a zstd frame (with its content size)."""
    compressor = getattr(_codecs, "compressor", None)
    if compressor is None:
        compressor = _codecs.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return bytes(compressor.compress(body))


def decompress_page(blob: bytes) -> bytes:
    """A stored body's bytes, whichever codec stored it (zstd, or zlib before zstd)."""
    if blob[:4] == _ZSTD_MAGIC:
        decompressor = getattr(_codecs, "decompressor", None)
        if decompressor is None:
            decompressor = _codecs.decompressor = zstandard.ZstdDecompressor()
        return bytes(decompressor.decompress(blob))
    return zlib.decompress(blob)


def stored_body(body: bytes) -> StoredBody:
    """``body`` hashed and compressed, as ``PageStore.save`` would store it."""
    return StoredBody(hashlib.sha256(body).hexdigest(), compress_page(body))
