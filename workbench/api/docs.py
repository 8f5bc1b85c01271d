"""``/docs``: Swagger UI served from this machine, usable when the API needs a token.

FastAPI's own docs page loads Swagger UI from a CDN (no internet here, nor on many research
servers) and, behind a bearer token, cannot even load: a browser sends no ``Authorization``
header when it opens a page. So the page and Swagger UI's files (from the
``swagger-ui-bundle-v2`` package, part of the ``api`` extra) are served here and are public
(``PUBLIC_PATHS``: they hold no data). When the API has a token, the page asks for it once,
keeps it in the tab's ``sessionStorage`` (gone when the tab closes; never in a cookie, so other
sites cannot make the browser send it) and adds it to every request Swagger UI makes, the
schema's included. ``/openapi.json`` and every route still need the token.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from workbench.api.deps import WorkbenchHolder

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def is_public(path: str) -> bool:
    """The docs page and its static files: served without the token."""
    return path == DOCS_PATH or path.startswith(ASSETS_PATH + "/")


def swagger_ui_dir() -> Path | None:
    """Swagger UI's files, from the ``swagger-ui-bundle-v2`` package (None if not installed)."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title} - docs</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<style>
  #wb-login {{font-family: sans-serif; margin: 16px 20px; display: flex; gap: 8px;
             align-items: center; flex-wrap: wrap}}
  #wb-login input {{font-family: monospace; padding: 4px; min-width: 22em}}
  #wb-note {{opacity: .7}}
</style></head>
<body>
<form id="wb-login" hidden>
  <label for="wb-token">API token (<code>WORKBENCH_API_TOKEN</code>)</label>
  <input id="wb-token" type="password" autocomplete="current-password" required>
  <button type="submit">Use it</button>
  <button type="button" id="wb-forget">Forget it</button>
  <span id="wb-note">kept in this tab only; sent as <code>Authorization: Bearer</code></span>
</form>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
(function () {{
  const config = {config};
  const KEY = "workbench-api-token";
  const form = document.getElementById("wb-login");
  const input = document.getElementById("wb-token");
  function token() {{ return sessionStorage.getItem(KEY) || ""; }}
  function start() {{
    window.ui = SwaggerUIBundle({{
      url: config.openapi, dom_id: "#swagger-ui", deepLinking: true,
      requestInterceptor: function (req) {{
        if (token()) {{ req.headers["Authorization"] = "Bearer " + token(); }}
        return req;
      }},
    }});
  }}
  form.addEventListener("submit", function (e) {{
    e.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    start();
  }});
  document.getElementById("wb-forget").addEventListener("click", function () {{
    sessionStorage.removeItem(KEY);
    document.getElementById("swagger-ui").innerHTML = "";
  }});
  if (config.tokenRequired) {{ form.hidden = false; }}
  if (!config.tokenRequired || token()) {{ start(); }}
}})();
</script>
</body></html>
"""

_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - docs</title></head>
<body style="font-family: sans-serif; margin: 2em">
<p>Swagger UI's files are not installed on this server: <code>pip install
swagger-ui-bundle-v2</code> (part of <code>workbench[api]</code>) serves them from here.</p>
<p>The API's schema is at <a href="{openapi}">{openapi}</a> (with the bearer token, if one is
set).</p></body></html>
"""


def add_docs(app: FastAPI, holder: WorkbenchHolder) -> None:
    """Serve ``/docs`` and Swagger UI's files (the app is made with ``docs_url=None``)."""
    assets = swagger_ui_dir()
    if assets is not None:
        app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    async def docs_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        openapi = f"{root}{app.openapi_url}"
        title = html.escape(app.title)
        if assets is None:
            return HTMLResponse(_MISSING.format(title=title, openapi=html.escape(openapi)))
        config: dict[str, Any] = {
            "openapi": openapi, "tokenRequired": bool(holder.get().settings.api_token),
        }
        # </script> cannot appear in JSON dumped with these escapes
        script_safe = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
        return HTMLResponse(
            _PAGE.format(title=title, assets=html.escape(root + ASSETS_PATH), config=script_safe),
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                     "Referrer-Policy": "no-referrer"},
        )

    app.add_api_route(DOCS_PATH, docs_page, methods=["GET"], include_in_schema=False)
