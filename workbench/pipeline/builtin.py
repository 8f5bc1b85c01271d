"""Built-in pipelines: ``article`` (the full analysis), ``metadata``, ``links`` and ``noop``.

``article`` params (all optional):

=================  =====================================================================
``max_keywords``   keywords to keep (default 10)
``include_text``   keep the main text in the result (default true)
``min_chars``      less main text than this is a ``no_main_content`` failure (default 50)
``embed_model``    local model2vec path: adds ``embedding`` (float32 vector of the text)
``llm_prompt``     a template with ``{title}``, ``{text}``, ``{url}``, ``{language}``,
                   ``{description}``: adds ``llm_answer``, ``llm_model``, ``llm_usage``
``llm_max_chars``  characters of text given to the LLM (default 6000)
``embed``          true: add ``embedding`` with WORKBENCH_EMBED_MODEL (default false)
=================  =====================================================================

Each pipeline declares its params (``ArticleParams``, ``LinksParams``, ``NoParams``), so
``submit`` refuses a wrong one at once; the worker checks them again when it runs an item.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from workbench.core.errors import PermanentError
from workbench.pipeline.context import Context
from workbench.pipeline.llm import render_prompt
from workbench.pipeline.registry import pipeline
from workbench.pipeline.text.article import extract_and_analyse_page

_DOC_FIELDS = ("title", "author", "date", "sitename", "description", "language", "categories",
               "tags", "hostname", "image")


class NoParams(BaseModel):
    """A pipeline that takes no params: any param is a mistake worth reporting."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ArticleParams(NoParams):
    """``article``'s params (see the module docs)."""

    max_keywords: int = Field(10, ge=0, le=100)
    include_text: bool = True
    min_chars: int = Field(50, ge=0, le=1_000_000)
    embed: bool = False
    embed_model: str | None = Field(None, min_length=1, max_length=4096)
    llm_prompt: str | None = Field(None, max_length=100_000)
    llm_max_chars: int = Field(6000, ge=100, le=1_000_000)


class LinksParams(NoParams):
    """``links``' params."""

    max_links: int = Field(500, ge=0, le=100_000)


def _int_param(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PermanentError(
            f"param {name!r} must be an integer in [{lo}, {hi}], got {value!r}",
            error_type="bad_params",
        )
    return value


@pipeline("article", version="1", description="Main text, metadata, language, keywords, stats",
          params=ArticleParams)
async def article(url: str, ctx: Context) -> dict[str, Any]:
    """Fetch, extract (trafilatura) and analyse one article page."""
    p = ctx.params
    max_keywords = _int_param(p, "max_keywords", 10, 0, 100)
    min_chars = _int_param(p, "min_chars", 50, 0, 1_000_000)
    # The page is stored after its extraction, which hashes and compresses it in the extraction
    # process (off the worker's event loop); stored whether the extraction succeeds or fails,
    # not when the item is cancelled (a worker stopping, the job's timeout): it is fetched again.
    page = await ctx.fetch(defer_store=True)
    try:
        with ctx.step("extract"):
            doc, analysis = await extract_and_analyse_page(
                ctx.tools.cpu, page, max_keywords=max_keywords, min_chars=min_chars,
                on_stored=ctx.stored_body_ready if ctx.store_pending else None,
            )
    except Exception:
        await ctx.store_fetched()
        raise
    await ctx.store_fetched()
    out: dict[str, Any] = {f: getattr(doc, f) for f in _DOC_FIELDS}
    out["language"] = doc.language or analysis.get("language")
    out.update(
        word_count=analysis["word_count"],
        char_count=analysis["char_count"],
        sentence_count=analysis["sentence_count"],
        paragraph_count=analysis["paragraph_count"],
        avg_sentence_words=analysis["avg_sentence_words"],
        unique_word_ratio=analysis["unique_word_ratio"],
        reading_time_min=analysis["reading_time_min"],
        language_detected=analysis["language_detected"],
        language_confidence=analysis["language_confidence"],
        keywords=analysis["keywords"],
        comments_chars=len(doc.comments or ""),
    )
    if p.get("include_text", True):
        out["text"] = doc.text
    if p.get("embed_model") or (p.get("embed") and ctx.settings.embed_model):
        out["embedding"] = (await ctx.embed([doc.text]))[0]
    if p.get("llm_prompt"):
        out.update(await _llm_step(ctx, doc, str(p["llm_prompt"])))
    return out


async def _llm_step(ctx: Context, doc: Any, template: str) -> dict[str, Any]:
    limit = _int_param(ctx.params, "llm_max_chars", 6000, 100, 1_000_000)
    # a template naming an unknown field is a PermanentError naming it (prompt_field_missing)
    prompt = render_prompt(
        template,
        title=doc.title or "",
        text=(doc.text or "")[:limit],
        url=ctx.url,
        language=doc.language or "",
        description=doc.description or "",
    )
    reply = await ctx.llm(prompt)
    return {"llm_answer": reply.text, "llm_model": reply.model, "llm_usage": reply.usage}


# ---------------------------------------------------------------- metadata
def _metadata(html: str, url: str) -> dict[str, Any]:
    """Runs in the CPU pool: trafilatura's metadata only (no main-text extraction)."""
    from trafilatura.metadata import extract_metadata

    meta = extract_metadata(html, default_url=url)
    d = meta.as_dict() if meta is not None else {}
    return {f: d.get(f) for f in ("title", "author", "date", "sitename", "description",
                                  "categories", "tags", "image", "hostname", "language")}


@pipeline("metadata", version="1", description="Title, author, date and other metadata only",
          params=NoParams)
async def metadata(url: str, ctx: Context) -> dict[str, Any]:
    """Cheap: page metadata without main-text extraction."""
    page = await ctx.fetch()
    out = await ctx.run_cpu(_metadata, page.text, page.final_url)
    out["bytes"] = len(page.body)
    out["content_type"] = page.content_type
    return out


# ---------------------------------------------------------------- links
def _links(html: str, base_url: str, limit: int) -> dict[str, Any]:
    """Runs in the CPU pool: every <a href> resolved against the page URL."""
    import lxml.html

    try:
        tree = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return {"links": [], "internal_links": 0, "external_links": 0, "link_count": 0}
    host = urlsplit(base_url).hostname
    seen: dict[str, None] = {}
    for href in tree.xpath("//a/@href"):
        href = str(href).strip()
        if not href or href.startswith(("#", "javascript:", "mailto:", "tel:")):
            continue
        absolute = urljoin(base_url, href).split("#", 1)[0]
        if urlsplit(absolute).scheme in ("http", "https"):
            seen.setdefault(absolute)
    links = list(seen)
    internal = sum(1 for u in links if urlsplit(u).hostname == host)
    return {
        "link_count": len(links),
        "internal_links": internal,
        "external_links": len(links) - internal,
        "links": links[:limit],
    }


@pipeline("links", version="1", description="Outgoing links: counts and the list",
          params=LinksParams)
async def links(url: str, ctx: Context) -> dict[str, Any]:
    """The page's distinct http(s) links (``max_links`` param, default 500)."""
    limit = _int_param(ctx.params, "max_links", 500, 0, 100_000)
    page = await ctx.fetch()
    return await ctx.run_cpu(_links, page.text, page.final_url, limit)


@pipeline("noop", version="1", description="Does nothing: measures the queue and ledger")
async def noop(url: str, ctx: Context) -> dict[str, Any]:
    """No fetch, no work: the overhead of the machinery itself."""
    return {"url": url}
