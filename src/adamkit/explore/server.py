"""The explorer's local web server: the page, and the JSON the page asks for.

Binds to 127.0.0.1 only. ``/`` is the page (``static/``, no CDN: it works offline);
``/api/functions`` lists the test functions, ``/api/contour?function=NAME`` gives one's grid,
``/api/run?...`` runs the reference for the page's settings (see :class:`Settings`). A bad
request gets HTTP 400 with ``{"error": "..."}`` naming what was wrong; nothing is a traceback.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..viz.functions import FUNCTIONS
from .compute import OPTIMIZERS, BadSetting, Settings, contour, run

STATIC = Path(__file__).parent / "static"
_FILES = {"/": ("index.html", "text/html"), "/explorer.js": ("explorer.js", "text/javascript")}


class _Handler(BaseHTTPRequestHandler):
    server_version = "adamkit-explore"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if url.path in _FILES:
                name, kind = _FILES[url.path]
                self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), kind)
            elif url.path == "/api/functions":
                self._json({"functions": list(FUNCTIONS), "optimizers": list(OPTIMIZERS)})
            elif url.path == "/api/contour":
                self._json(contour(query.get("function", "")))
            elif url.path == "/api/run":
                self._json(run(Settings.from_query(query)))
            else:
                self._json({"error": f"no page {url.path!r}"}, HTTPStatus.NOT_FOUND)
        except BadSetting as error:
            self._json({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        except Exception as error:  # a bug: say so in one line, keep serving
            self._json({"error": f"internal error: {error!r}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _json(self, payload: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(_clean(payload), allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the terminal shows the URL, not every request


def _clean(value: object) -> object:
    """``value`` with NaN and infinities as null (JSON has neither), e.g. a diverged f."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def make_server(port: int = 0) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:``port`` (0: a free port, see ``server.server_port``).

    Raises OSError (e.g. the port is in use) as the socket does.
    """
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    return server
