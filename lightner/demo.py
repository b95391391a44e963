"""`lightner demo`: a small web page to try an adapter: a text box, the entities drawn in the text, a table of them.

A standard-library HTTP server, so the demo needs nothing beyond the package. It listens on 127.0.0.1 unless told
otherwise, and answers:
- `GET /`: the page; `POST /` (a form with `text` and `adapter`): the page with that text's entities;
- `POST /api/entities` (JSON `{"text": ..., "adapter": ...}`): the pipeline's entities as JSON.

A request body is read only when its `Content-Length` is a number within `MAX_BODY_BYTES` (else 400, 411 or 413,
`serving.BoundedRequestHandler`), and a JSON body that cannot be read gets a 400 with the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from html import escape
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs

from .render import html_page, render_entities
from .serving import BoundedRequestHandler, RequestRefused, parse_json

MAX_TEXT_CHARACTERS = 100_000
# Room for the longest text a request may hold however it is encoded (a character outside the BMP is 12 bytes as
# JSON's "\ud83d\ude00" or as a form's percent-encoded UTF-8), and for the adapter's name and the field names.
MAX_BODY_BYTES = 12 * MAX_TEXT_CHARACTERS + 4096
EXAMPLE_TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss the European Union budget."
_FORM_STYLE = """
textarea { width: 100%; height: 8em; font: inherit; padding: 0.5em; box-sizing: border-box; }
form { margin-bottom: 1.5em; } button, select { font: inherit; padding: 0.3em 0.8em; margin-top: 0.5em; }
table { border-collapse: collapse; margin-top: 1em; } td, th { border: 1px solid #ddd; padding: 0.3em 0.8em; }
th { background: #f6f6f6; text-align: left; } .error { color: #b00020; }
"""


class DemoServer(ThreadingHTTPServer):
    """Serves one pipeline; `adapters` are the names a visitor may choose between (the model's loaded adapters)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], pipeline, title: str = "LightNER demo"):
        super().__init__(address, DemoRequestHandler)
        self.pipeline = pipeline
        self.title = title
        self.adapters: list[str] = pipeline.model.list_adapters()
        self.lock = threading.Lock()  # one prediction at a time: the model is not made for concurrent calls

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def entities(self, text: str, adapter: str | None) -> list[dict]:
        if not isinstance(text, str):
            raise ValueError(f'"text" must be a string, not {type(text).__name__}')
        if len(text) > MAX_TEXT_CHARACTERS:
            raise ValueError(f"the text has {len(text):,} characters; the demo reads at most {MAX_TEXT_CHARACTERS:,}")
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"no adapter named {adapter!r}; choose one of {self.adapters}")
        with self.lock:
            return self.pipeline(text, adapter=adapter)


class DemoRequestHandler(BoundedRequestHandler):
    server: DemoServer
    max_body_bytes = MAX_BODY_BYTES

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        if self.path.split("?")[0] != "/":
            self.send_content(HTTPStatus.NOT_FOUND, "text/plain", "not found")
            return
        self._send_page(EXAMPLE_TEXT, None, None, None)

    def do_POST(self) -> None:  # noqa: N802
        if self.path not in ("/", "/api/entities"):
            self.send_content(HTTPStatus.NOT_FOUND, "text/plain", "not found")
            return
        try:
            body = self.read_body()
        except RequestRefused as refused:
            if self.path == "/api/entities":
                self.send_content(refused.status, "application/json", json.dumps({"error": str(refused)}))
            else:
                self._send_page("", None, None, str(refused), refused.status)
            return
        if self.path == "/api/entities":
            self._answer_api(body)
        else:
            form = parse_qs(body.decode("utf-8", errors="replace"))
            text, adapter = form.get("text", [""])[0], form.get("adapter", [None])[0]
            try:
                self._send_page(text, adapter, self.server.entities(text, adapter), None)
            except ValueError as error:
                self._send_page(text, adapter, None, str(error), HTTPStatus.BAD_REQUEST)

    def _answer_api(self, body: bytes) -> None:
        try:
            request = parse_json(body)
            if not isinstance(request, dict) or "text" not in request:
                raise ValueError('send a JSON object {"text": "...", "adapter": optional name}')
            answer, status = {"entities": self.server.entities(request["text"], request.get("adapter"))}, 200
        except ValueError as error:
            answer, status = {"error": str(error)}, HTTPStatus.BAD_REQUEST
        self.send_content(status, "application/json", json.dumps(answer))

    def _send_page(
        self,
        text: str,
        adapter: str | None,
        entities: list[dict] | None,
        error: str | None,
        status: int = HTTPStatus.OK,
    ) -> None:
        body = _form(text, self.server.adapters, adapter)
        if error is not None:
            body += f'<p class="error">{escape(error)}</p>'
        if entities is not None:
            body += render_entities(text, entities) + _table(entities)
        self.send_content(status, "text/html; charset=utf-8", html_page(self.server.title, body, _FORM_STYLE))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        """Quiet: the demo prints its address once instead of a line per request."""


def _form(text: str, adapters: Sequence[str], chosen: str | None) -> str:
    choice = ""
    if len(adapters) > 1:
        options = "".join(
            f'<option value="{escape(name)}"{" selected" if name == chosen else ""}>{escape(name)}</option>'
            for name in adapters
        )
        choice = f'<label>Adapter <select name="adapter">{options}</select></label> '
    return (
        "<h1>LightNER</h1>\n"
        f'<form method="post" action="/"><textarea name="text" aria-label="text">{escape(text)}</textarea><br>'
        f'{choice}<button type="submit">Find entities</button></form>\n'
    )


def _table(entities: Sequence[dict]) -> str:
    if not entities:
        return "<p>No entities found.</p>"
    rows = "".join(
        f"<tr><td>{escape(e['entity_group'])}</td><td>{escape(e['word'])}</td><td>{e['start']}</td>"
        f"<td>{e['end']}</td><td>{e['score']:.3f}</td></tr>"
        for e in entities
    )
    return f"<table><tr><th>type</th><th>text</th><th>start</th><th>end</th><th>score</th></tr>{rows}</table>"


def make_server(pipeline, host: str = "127.0.0.1", port: int = 7860) -> DemoServer:
    """A demo server for `pipeline` (a `LightNerPipeline`); port 0 picks a free one (see `server.url`)."""
    return DemoServer((host, port), pipeline)


__all__ = ["DemoServer", "make_server"]
