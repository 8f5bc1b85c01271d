"""Main-content extraction with trafilatura, run in the CPU pool.

``extract_document`` is the pure function the child process runs; ``extract`` is what pipelines
await (``ctx.extract``). Statistics and keywords live in ``text.analyse``; ``text.article`` runs
both in one pool round trip.

Settings were chosen by measuring on the article-extraction-benchmark corpus (181 pages,
F1 of 4-gram word shingles, trafilatura 2.3): ``favor_precision`` 0.960, default 0.951,
``favor_recall`` 0.951, ``fast`` (no fallback extractors) 0.954, precision without tables 0.949.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.core.errors import ExtractionFailed, NoMainContent, PipelineError
from workbench.core.page import Document, Page
from workbench.pipeline.text.analyse import detect_language as _detect_language

if TYPE_CHECKING:
    from workbench.pipeline.cpu import CpuPool

#: Fewer characters of main text than this is "no main content" (menus, cookie walls, stubs).
MIN_TEXT_CHARS = 50

#: Options passed to ``trafilatura.bare_extraction``; see the module docstring for the measurements.
EXTRACT_OPTIONS: dict[str, Any] = {
    "favor_precision": True,
    "include_comments": True,  # kept apart from ``text``; fills the ``comments`` field
    "include_tables": True,
    "include_images": False,
    "include_links": False,
    "with_metadata": True,
}

_STR_FIELDS = (
    "title", "author", "date", "sitename", "description", "language", "hostname", "image"
)
_LIST_FIELDS = ("categories", "tags")


def extract_document(html: str, url: str | None, *, detect_language: bool = True) -> dict[str, Any]:
    """Extract main text and metadata from decoded HTML; plain JSON types only.

    Returns the ``Document`` fields (title, author, date, sitename, description, language, text,
    categories, tags, comments, hostname, image, url). ``text`` is ``""`` when trafilatura found no
    main content. trafilatura only sets ``language`` when asked to filter by language, so with
    ``detect_language`` it is detected from the text with py3langid (ISO 639-1 code, or None).
    """
    import trafilatura  # imported here too so the parent can import this module cheaply

    result = trafilatura.bare_extraction(html, url=url, **EXTRACT_OPTIONS)
    raw: dict[str, Any]
    if result is None:
        raw = {}
    elif isinstance(result, dict):  # only with as_dict=True, which we never pass
        raw = result
    else:
        raw = result.as_dict()
    doc: dict[str, Any] = {"url": _str(raw.get("url")) or url}
    for key in _STR_FIELDS:
        doc[key] = _str(raw.get(key))
    doc["text"] = _str(raw.get("text")) or ""
    doc["comments"] = _str(raw.get("comments"))
    for key in _LIST_FIELDS:
        doc[key] = _str_list(raw.get(key))
    if detect_language and not doc["language"] and doc["text"]:
        doc["language"] = _detect_language(doc["text"])[0]
    return doc


def check_main_content(
    doc: dict[str, Any], url: str | None, *, min_chars: int = MIN_TEXT_CHARS
) -> None:
    """Raise ``NoMainContent`` (naming the URL) when ``doc`` has too little main text."""
    text = (doc.get("text") or "").strip()
    if len(text) < min_chars:
        what = "no main text" if not text else f"only {len(text)} characters of main text"
        raise NoMainContent(
            f"trafilatura found {what} at {url or doc.get('url') or '(no URL)'} "
            f"(needs at least {min_chars}); the page may be a menu, a login or cookie wall, "
            "or rendered by JavaScript"
        )


async def extract(pool: CpuPool, page: Page, *, min_chars: int = MIN_TEXT_CHARS) -> Document:
    """Extract ``page`` in the CPU pool.

    Raises ``NoMainContent`` when there is too little main text and ``ExtractionFailed`` when the
    extractor crashed (an exception, or its process died).
    """
    # The decoded text, not the bytes: our fetcher's charset detection must win over trafilatura's.
    data = await run_in_pool(pool, extract_document, page.text, page.final_url, url=page.final_url)
    check_main_content(data, page.final_url, min_chars=min_chars)
    return Document.from_dict(data)


async def run_in_pool(pool: CpuPool, fn: Any, *args: Any, url: str | None) -> Any:
    """``pool.run(fn, *args)``, translating crashes into ``ExtractionFailed`` that names ``url``."""
    try:
        return await pool.run(fn, *args)
    except ExtractionFailed as exc:
        raise ExtractionFailed(f"{exc} (page {url})") from exc
    except PipelineError:
        raise
    except Exception as exc:
        raise ExtractionFailed(f"extraction of {url} failed: {type(exc).__name__}: {exc}") from exc


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _str_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [s for s in (str(v).strip() for v in value) if s]
