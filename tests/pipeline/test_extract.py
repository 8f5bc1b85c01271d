"""Extraction in the CPU pool: small hand-written pages (the pool itself: test_cpu_pool.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from workbench.core.errors import NoMainContent
from workbench.core.page import Document, Page
from workbench.pipeline.cpu import CpuPool
from workbench.pipeline.text.article import extract_and_analyse, extract_and_analyse_page
from workbench.pipeline.text.extract import MIN_TEXT_CHARS, extract, extract_document

PARAGRAPHS = [
    "The city council voted on Tuesday to turn the old railway depot into a public library, "
    "ending a debate that has divided the neighbourhood for nearly a decade.",
    "Supporters argued that the building, a listed brick hall from 1894, deserves a use that "
    "keeps its doors open to everyone, while opponents wanted housing on the site.",
    "Construction is expected to begin next spring. The architects plan to keep the original "
    "iron roof trusses and to add a reading garden along the former platforms.",
    "Residents will be invited to three public meetings to discuss the design before the "
    "final plans are submitted to the heritage office in the autumn.",
]

ARTICLE = f"""<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8">
<title>Old depot becomes a library | The Riverside Gazette</title>
<meta name="author" content="Jane Doe">
<meta name="description" content="The council turns the railway depot into a library.">
<meta property="og:site_name" content="The Riverside Gazette">
<meta property="og:title" content="Old depot becomes a library">
<meta property="og:image" content="https://gazette.example.org/img/depot.jpg">
<meta property="article:published_time" content="2024-03-05T09:30:00Z">
<meta property="article:tag" content="libraries">
<meta property="article:tag" content="urban planning">
</head><body>
<nav><a href="/">Home</a> <a href="/news">News</a> <a href="/sport">Sport</a></nav>
<article>
<h1>Old depot becomes a library</h1>
<p class="byline">By Jane Doe</p>
{"".join(f"<p>{p}</p>" for p in PARAGRAPHS)}
</article>
<footer>© 2024 The Riverside Gazette. All rights reserved. <a href="/privacy">Privacy</a></footer>
</body></html>"""

NO_CONTENT = """<html><head><title>Login</title></head><body>
<nav><a href="/">Home</a><a href="/login">Log in</a></nav>
<form><input name="user"><input type="password" name="pw"><button>Sign in</button></form>
<footer><a href="/privacy">Privacy</a></footer></body></html>"""

URL = "https://gazette.example.org/news/2024/03/depot-library"


def make_page(html: str, url: str = URL, encoding: str = "utf-8") -> Page:
    return Page(
        url=url,
        final_url=url,
        status=200,
        headers={"content-type": f"text/html; charset={encoding}"},
        content_type="text/html",
        body=html.encode(encoding),
        encoding=encoding,
        fetched_at=datetime.now(UTC),
    )


@pytest.fixture
async def pool() -> AsyncIterator[CpuPool]:
    p = CpuPool(2, timeout_s=20)
    yield p
    p.close()


def test_extract_document_article_metadata() -> None:
    doc = extract_document(ARTICLE, URL)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON types only
    assert set(doc) == set(Document.__dataclass_fields__)
    assert doc["title"] == "Old depot becomes a library"
    assert doc["author"] == "Jane Doe"
    assert doc["date"] == "2024-03-05"
    assert doc["sitename"] == "The Riverside Gazette"
    assert doc["description"] == "The council turns the railway depot into a library."
    assert doc["hostname"].endswith("example.org")  # trafilatura reports the domain
    assert doc["image"] == "https://gazette.example.org/img/depot.jpg"
    assert doc["url"] == URL
    assert doc["language"] == "en"  # detected: trafilatura only sets it when filtering
    assert "libraries" in doc["tags"]
    for paragraph in PARAGRAPHS:
        assert paragraph in doc["text"]
    assert "All rights reserved" not in doc["text"]
    assert "Sport" not in doc["text"]


def test_extract_document_empty_page() -> None:
    doc = extract_document(NO_CONTENT, "https://example.org/login")
    assert len(doc["text"]) < MIN_TEXT_CHARS  # trafilatura may keep a scrap such as "HomeLog in"
    assert doc["categories"] == [] and doc["tags"] == []


async def test_extract_in_pool(pool: CpuPool) -> None:
    doc = await extract(pool, make_page(ARTICLE))
    assert isinstance(doc, Document)
    assert doc.title == "Old depot becomes a library"
    assert PARAGRAPHS[2] in doc.text


async def test_extract_uses_decoded_text_not_bytes(pool: CpuPool) -> None:
    # The body is cp1252 and says nothing about it: only page.text (our decoding) reads right.
    html = ARTICLE.replace('<meta charset="utf-8">', "").replace("Residents", "Résidents")
    doc = await extract(pool, make_page(html, encoding="cp1252"))
    assert "Résidents will be invited" in doc.text


async def test_no_main_content_names_url(pool: CpuPool) -> None:
    url = "https://example.org/login"
    with pytest.raises(NoMainContent, match=r"example\.org/login") as info:
        await extract(pool, make_page(NO_CONTENT, url=url))
    assert info.value.error_type == "no_main_content" and not info.value.retryable


async def test_extract_and_analyse_one_round_trip(pool: CpuPool) -> None:
    out = extract_and_analyse(ARTICLE, URL, max_keywords=5)
    assert set(out) == {"document", "analysis"}
    assert out["document"]["language"] == "en" and out["analysis"]["language_detected"]
    assert len(out["analysis"]["keywords"]) == 5
    doc, analysis = await extract_and_analyse_page(pool, make_page(ARTICLE), max_keywords=3)
    assert doc.title == "Old depot becomes a library"
    assert analysis["word_count"] > 100 and len(analysis["keywords"]) == 3
    with pytest.raises(NoMainContent):
        await extract_and_analyse_page(pool, make_page(NO_CONTENT))
