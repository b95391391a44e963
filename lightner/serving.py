"""HTTP request handling shared by the package's servers (`lightner demo`): bounded request bodies and JSON that
cannot crash a request thread.

Why: `BaseHTTPRequestHandler` leaves reading the body to each server, and the plain
`rfile.read(int(headers["Content-Length"]))` fails on `Content-Length: abc` (a dropped connection), waits forever on
`-1` (read to the end of a stream the client keeps open), and allocates whatever a client announces
(`1000000000000`: a MemoryError); `json.loads` of a body of 100,000 nested brackets raises a RecursionError. Here the
declared length is checked before a byte is read, the body is never read past the server's cap, a client that stops
sending mid-request is cut off after `timeout` seconds, and each refusal is an HTTP status with a message.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_TIMEOUT_SECONDS = 60


class RequestRefused(Exception):
    """A request the server will not read or serve: the HTTP status to answer and the message saying why."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """A request handler whose `read_body` reads at most `max_body_bytes`, and whose socket operations give up after
    `timeout` seconds (`StreamRequestHandler` sets it on the connection), so that no client holds a thread forever."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout = DEFAULT_TIMEOUT_SECONDS

    def read_body(self) -> bytes:
        """The request's body, exactly the `Content-Length` it announces; `RequestRefused` with 411 when it announces
        none (chunked bodies are not read), 400 when the length is not a number of bytes or the body ends (or stalls)
        before it, 413 when it is over the cap (and then nothing is read)."""
        declared = set(self.headers.get_all("Content-Length") or [])
        if not declared:
            raise RequestRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header")
        if len(declared) > 1:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"the request has several Content-Length headers: {declared}")
        (value,) = declared
        if not re.fullmatch(r"[0-9]{1,20}", value.strip()):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"Content-Length {value!r} is not a number of bytes")
        length = int(value)
        if length > self.max_body_bytes:
            raise RequestRefused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body has {length:,} bytes; this server reads at most {self.max_body_bytes:,}",
            )
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            body = b""
        if len(body) < length:
            raise RequestRefused(
                HTTPStatus.BAD_REQUEST,
                f"the body ended (or stalled for {self.timeout} s) before the {length:,} bytes its Content-Length "
                "announced",
            )
        return body

    def send_content(self, status: int, content_type: str, content: str) -> None:
        """Answer with `content` as the whole response; a refused request's connection is closed after it, since the
        body it may still be sending was not read."""
        payload = content.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        try:
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client left before its answer: nobody to tell
            self.close_connection = True


def parse_json(body: bytes) -> Any:
    """A UTF-8 JSON body as Python values; a `ValueError` saying what is wrong with it otherwise, deep nesting
    included (which `json` reports as a RecursionError)."""
    try:
        return json.loads(body.decode("utf-8"))  # a UnicodeDecodeError and a JSONDecodeError are ValueErrors
    except RecursionError:
        raise ValueError("the JSON body is nested too deeply to read") from None


__all__ = ["BoundedRequestHandler", "RequestRefused", "parse_json"]
