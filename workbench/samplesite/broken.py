"""The sample site's failure routes: what each answers, and the ``error_type`` it should leave.

Failure routes (``BROKEN_ROUTES`` maps each to the ``error_type`` the ledger should record):

=========================  ===============================================  =====================
``/broken/not-found``      404                                              ``http_404``
``/broken/gone``           410                                              ``http_410``
``/broken/server-error``   500 every time (transient: retried, then fails)  ``http_500``
``/broken/binary``         200 ``application/octet-stream``                 ``unsupported_content``
``/broken/empty``          200 with an empty body                           ``empty_response``
``/broken/no-content``     valid HTML with only a menu and a footer         ``no_main_content``
``/broken/redirect-loop``  302 to a page that redirects back                ``too_many_redirects``
=========================  ===============================================  =====================

``/broken/flaky`` is not in that table because a retry fixes it: its first N requests (N = 2, or
``?fail=N``; counted per path and query for the site's lifetime) answer 503 with
``Retry-After: 1``, later ones a real article. Which requests fail, and which routes have been
fixed, is the running ``SampleSite``'s state (``workbench.samplesite.site``); this module builds
the answers.
"""

from __future__ import annotations

import random

from aiohttp import web

#: Failure route -> the ``error_type`` a failed item for it records.
BROKEN_ROUTES: dict[str, str] = {
    "/broken/not-found": "http_404",
    "/broken/gone": "http_410",
    "/broken/server-error": "http_500",
    "/broken/binary": "unsupported_content",
    "/broken/empty": "empty_response",
    "/broken/no-content": "no_main_content",
    "/broken/redirect-loop": "too_many_redirects",
}
#: Answers 503 (Retry-After: 1) to its first N requests, then a real article.
FLAKY_PATH = "/broken/flaky"
DEFAULT_FLAKY_FAILURES = 2
#: The second hop of ``/broken/redirect-loop``: redirects back to it.
LOOP_HOP = "/broken/redirect-loop/again"
#: The routes ``SampleSite.fix`` can make serve a good article.
FIXABLE: tuple[str, ...] = (*BROKEN_ROUTES, FLAKY_PATH)
HTML = "text/html"

_ERROR_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {reason} | The Commonplace Review</title></head>
<body><h1>{status} {reason}</h1><p>{text}</p><p><a href="/index.html">Back to the front page</a></p></body></html>
"""  # noqa: E501 - served as written

# Only a menu and a footer: trafilatura (favor_precision) finds no main text, and its fallback
# finds fewer than 50 characters of link labels.
_NO_CONTENT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Page moved | The Commonplace Review</title>
<meta name="description" content="The Commonplace Review">
</head>
<body>
<header class="site-header"><a class="logo" href="/index.html">The Commonplace Review</a>
<nav class="main-nav"><ul><li><a href="/index.html">Home</a></li><li><a href="/index.html#topic-science">Science</a></li><li><a href="/index.html#topic-cities">Cities</a></li><li><a href="/index.html#topic-history">History</a></li><li><a href="/index.html#topic-food">Food</a></li><li><a href="/index.html#topic-technology">Technology</a></li><li><a href="/index.html#topic-nature">Nature</a></li></ul></nav>
</header>
<div class="layout"><main id="content"></main></div>
<footer class="site-footer"><ul class="footer-links"><li><a href="/index.html#about">About us</a></li><li><a href="/index.html#contact">Contact</a></li><li><a href="/index.html#privacy">Privacy policy</a></li></ul>
<p>© 2024 The Commonplace Review. All rights reserved.</p></footer>
</body>
</html>
"""  # noqa: E501 - served as written

# Looks like the start of a zip archive; fixed so every run serves the same bytes.
_BINARY_BODY = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + random.Random(1854).randbytes(4086)


def html_response(body: bytes, *, compress: bool = False) -> web.Response:
    """A UTF-8 HTML page; ``compress``: gzip/deflate when the client accepts it, like real sites."""
    resp = web.Response(body=body, content_type=HTML, charset="utf-8")
    if compress:
        resp.enable_compression()
    return resp


def error_response(status: int, reason: str, text: str) -> web.Response:
    """The site's HTML error page with this status."""
    page = _ERROR_PAGE.format(status=status, reason=reason, text=text)
    return web.Response(status=status, text=page, content_type=HTML, charset="utf-8")


def busy_response() -> web.Response:
    """What ``/broken/flaky`` answers while it still fails: 503 with ``Retry-After: 1``."""
    resp = error_response(503, "Service Unavailable", "Busy; try again in a second.")
    resp.headers["Retry-After"] = "1"
    return resp


def broken_response(route: str) -> web.StreamResponse:
    """The failure of one of ``BROKEN_ROUTES`` (not fixed); raises ``HTTPFound`` for the loop."""
    if route == "/broken/not-found":
        return error_response(404, "Not Found", "This article does not exist.")
    if route == "/broken/gone":
        return error_response(410, "Gone", "This article was withdrawn and will not come back.")
    if route == "/broken/server-error":
        return error_response(500, "Internal Server Error", "Something went wrong on our side.")
    if route == "/broken/binary":
        return web.Response(body=_BINARY_BODY, content_type="application/octet-stream")
    if route == "/broken/empty":
        return web.Response(body=b"", content_type=HTML, charset="utf-8")
    if route == "/broken/no-content":
        return html_response(_NO_CONTENT_PAGE.encode())
    assert route == "/broken/redirect-loop"
    raise web.HTTPFound(LOOP_HOP)
