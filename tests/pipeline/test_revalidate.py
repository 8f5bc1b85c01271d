"""Conditional refetch (issue 11): a stored page is asked for with If-None-Match /
If-Modified-Since, and a 304 reuses it; end to end, ``refresh=True`` over stored pages gives
results whose provenance reads ``http_status=304, from_stored_page=True``. Real loopback sites."""

from __future__ import annotations

from aiohttp import web

from workbench import Workbench
from workbench.core.urls import normalize_url
from workbench.ledger.pages import PageStore

from .fetch_fixtures import html, make_fetcher, serve  # noqa: F401

ARTICLE = "<article>" + "<p>Rivers rise in spring when the snow melts in the hills.</p>" * 8


def validating_site(*, etag: str | None = '"v1"', modified: str | None = None):
    seen: list[tuple[str, dict[str, str]]] = []
    state = {"etag": etag}

    async def page(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers)))
        tag = state["etag"]
        if tag and request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        if modified and request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304)
        resp = html(f"<h1>Version {tag}</h1>{ARTICLE}")
        if tag:
            resp.headers["ETag"] = tag
        if modified:
            resp.headers["Last-Modified"] = modified
        return resp

    async def moved(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers)))
        raise web.HTTPMovedPermanently("/new")

    return seen, state, {"/old": moved, "/{tail:.*}": page}


async def test_a_304_reuses_the_stored_page(serve, make_fetcher):
    seen, _, routes = validating_site()
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=False)
    url = str(server.make_url("/a"))
    first = await fetcher.fetch(url)
    again = await fetcher.fetch(url, revalidate=first)
    assert seen[1][1]["If-None-Match"] == '"v1"'
    assert again.status == 304 and again.from_store and again.body == first.body
    assert again.sha256 == first.sha256 and again.fetched_at > first.fetched_at


async def test_a_changed_page_is_downloaded(serve, make_fetcher):
    _, state, routes = validating_site()
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=False)
    url = str(server.make_url("/a"))
    first = await fetcher.fetch(url)
    state["etag"] = '"v2"'
    again = await fetcher.fetch(url, revalidate=first)
    assert again.status == 200 and not again.from_store and b"Version" in again.body
    assert again.sha256 != first.sha256


async def test_validators_go_to_the_url_the_page_came_from(serve, make_fetcher):
    modified = "Wed, 21 Oct 2015 07:28:00 GMT"
    seen, _, routes = validating_site(etag=None, modified=modified)
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=False)
    url = str(server.make_url("/old"))
    first = await fetcher.fetch(url)  # /old -> /new
    assert first.final_url.endswith("/new")
    again = await fetcher.fetch(url, revalidate=first)
    hops = seen[2:]
    assert [p for p, _ in hops] == ["/old", "/new"]
    assert "If-Modified-Since" not in hops[0][1]  # the redirect is not the page
    assert hops[1][1]["If-Modified-Since"] == modified
    assert again.status == 304 and again.redirects == (url,) and again.url == url


async def test_no_validators_no_condition(serve, make_fetcher):
    seen, _, routes = validating_site(etag=None)
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=False)
    url = str(server.make_url("/a"))
    first = await fetcher.fetch(url)
    again = await fetcher.fetch(url, revalidate=first)
    assert again.status == 200 and "If-None-Match" not in seen[1][1]


async def test_refresh_revalidates_stored_pages(wb: Workbench, run_worker, serve):
    seen, _, routes = validating_site()
    server = await serve(routes)
    urls = [str(server.make_url(f"/p/{n}")) for n in range(3)]
    first = await wb.submit(urls, pipeline="article")
    await run_worker(cpu_processes=1)
    assert (await first.wait(timeout=30))["done"] == 3
    again = await wb.submit(urls, pipeline="article", refresh=True)
    await run_worker(cpu_processes=1)
    assert (await again.wait(timeout=30))["done"] == 3
    old = (await first.results()).set_index("url")
    new = (await again.results()).set_index("url")
    assert (new["http_status"] == 304).all() and new["from_stored_page"].all()
    assert (new["content_sha256"] == old["content_sha256"]).all()
    assert (new["title"] == old["title"]).all()
    conditional = [h for p, h in seen if p.startswith("/p/") and "If-None-Match" in h]
    assert len(conditional) == 3
    # the 304 stored nothing: the newest snapshot is still the 200 one
    page = await PageStore(await wb.open_ledger()).load(normalize_url(urls[0]))
    assert page is not None and page.status == 200
