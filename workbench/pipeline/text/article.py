"""Extraction and analysis in one round trip to the CPU pool: what the ``article`` pipeline runs.

Both steps run in the same child, so the page travels to the pool once and its main text is not
sent back and forth between two calls. The page travels as its bytes and charset and is decoded
in the child: pickling a 170 KB ``str`` (UTF-8 encoding it) and decoding it in the worker cost the
worker's process ~0.8 ms per page, pickling the bytes ~0.04 ms. When the page is still to be
stored, the child also hashes and compresses it (``core.pagecodec.stored_body``): that was
~1.5-2 ms of the worker's process per page on the event loop (benchmarks/NOTES.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workbench.core.page import Document
from workbench.core.pagecodec import StoredBody, stored_body
from workbench.pipeline.text.analyse import analyse_document
from workbench.pipeline.text.extract import check_main_content, extract_document, run_in_pool

if TYPE_CHECKING:
    from workbench.core.page import Page
    from workbench.pipeline.cpu import CpuPool


def extract_and_analyse(html: str, url: str | None, max_keywords: int = 10) -> dict[str, Any]:
    """Extraction plus analysis in one call (one pool round trip): ``{"document", "analysis"}``.

    The document's language is the page's own if trafilatura found one, else the detected one.
    """
    document = extract_document(html, url, detect_language=False)
    analysis = analyse_document(document, max_keywords=max_keywords)
    if not document.get("language"):
        document["language"] = analysis["language"]
    return {"document": document, "analysis": analysis}


def extract_and_analyse_body(
    body: bytes, encoding: str, url: str | None, max_keywords: int = 10, store: bool = False
) -> dict[str, Any]:
    """``extract_and_analyse`` of ``body`` decoded as ``Page.text`` decodes it (the fetcher's
    charset, errors replaced), in the child rather than in the worker's process. ``store``:
    also ``"stored"``, the body's ``StoredBody`` as a tuple (a page with no main content has it
    too; should extraction raise, the worker compresses the page itself)."""
    out = extract_and_analyse(body.decode(encoding, errors="replace"), url, max_keywords)
    if store:
        out["stored"] = tuple(stored_body(body))
    return out


async def extract_and_analyse_page(
    pool: CpuPool,
    page: Page,
    *,
    max_keywords: int = 10,
    min_chars: int | None = None,
    on_stored: Callable[[StoredBody], None] | None = None,
) -> tuple[Document, dict[str, Any]]:
    """Await ``extract_and_analyse`` for ``page`` in ``pool``: ``(Document, analysis)``.

    ``on_stored``: called with the page's ``StoredBody``, made in the child beside the
    extraction (before the main-content check, so a page with too little text has it too).
    Raises ``NoMainContent`` / ``ExtractionFailed`` as ``extract.extract`` does.
    """
    out = await run_in_pool(
        pool, extract_and_analyse_body, page.body, page.encoding, page.final_url, max_keywords,
        on_stored is not None, url=page.final_url,
    )
    if on_stored is not None:
        on_stored(StoredBody(*out.pop("stored")))
    if min_chars is None:
        check_main_content(out["document"], page.final_url)
    else:
        check_main_content(out["document"], page.final_url, min_chars=min_chars)
    return Document.from_dict(out["document"]), out["analysis"]


def warm_up() -> None:
    """Load the lazy parts (trafilatura's XPath caches, the language model, stopword lists) by
    running one tiny page through ``extract_and_analyse``."""
    extract_and_analyse(
        "<html><body><article><p>Warm-up paragraph with enough words to extract. "
        "It exists so the first real page is not slow.</p></article></body></html>",
        None,
    )
