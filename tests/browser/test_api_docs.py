"""``/docs`` in a real browser (Chromium through Playwright) against ``python -m workbench serve``
with a token: the page asks for the token, Swagger UI loads the schema with it and runs a call,
and no request leaves the machine (issue 14, row 13).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``); skips with that hint otherwise.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "docs-token-5e6f"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium); "
        "Playwright's own browser download is not used",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_DATA_DIR=str(tmp_path / "data"), WORKBENCH_API_TOKEN=TOKEN)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/docs", timeout=2).close()
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("serve did not start:\n"
                                       + (tmp_path / "serve.log").read_text()[-3000:]) from None
                time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        log.close()
        from workbench.queue.embedded import EmbeddedRedis

        EmbeddedRedis(tmp_path / "data" / "redis").stop()


def test_docs_ask_for_the_token_and_work_offline(served: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    hosts: set[str] = set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
            page.goto(f"{served}/docs")
            token = page.locator("#wb-token")
            expect(token).to_be_visible()
            expect(page.locator(".opblock")).to_have_count(0)  # nothing without the token
            token.fill(TOKEN)
            page.get_by_role("button", name="Use it").click()
            listing = page.locator(".opblock-summary-path", has_text="/batches").first
            expect(listing).to_be_visible(timeout=30_000)

            # a call from the page carries the token: GET /batches answers 200
            get_batches = page.locator(".opblock-get").filter(
                has=page.locator(".opblock-summary-path", has_text="/batches")).first
            get_batches.locator(".opblock-summary").click()
            get_batches.get_by_role("button", name="Try it out").click()
            get_batches.get_by_role("button", name="Execute").click()
            status = get_batches.locator(".live-responses-table tr.response td.response-col_status")
            expect(status.first).to_have_text("200", timeout=30_000)

            # a new tab of the same browser context asks again: the token lived in that tab
            other = browser.new_page()
            other.goto(f"{served}/docs")
            expect(other.locator("#wb-token")).to_be_visible()
        finally:
            browser.close()
    assert hosts == {urlsplit(served).netloc}, hosts  # Swagger UI came from the server itself
