"""HTTP/1.1 on loopback for `restarter serve`: reading requests, writing answers.

`http.server` does the protocol; this reads bodies (Content-Length or chunked, up to API
Gateway's payload limit), drops hop-by-hop headers, takes the stage prefix of an execute-api
URL off `/local/v1/...`, and answers `http.server`'s own refusals (bad request line, unknown
method, body too large) in the API's error envelope, so a client sees one error shape.
What a request means is up to the server it is handed to (`RequestDispatcher`).
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from restarter_local.gateway import STAGE, GatewayResponse

API_PREFIX = "/v1"
# API Gateway's payload limit; the API function itself refuses bodies over 64 KiB.
MAX_BODY_BYTES = 10 * 1024 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HOP_BY_HOP = frozenset({"connection", "content-length", "keep-alive", "transfer-encoding"})


def error_envelope(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """The API's error answer (`{"success": false, "error": {...}}`), for answers made here."""
    error = {"code": code, "message": message, "details": details or {}}
    return json.dumps({"success": False, "error": error}).encode()


class RequestDispatcher(Protocol):
    """What answers the requests: `LocalServer`."""

    access_log: bool

    def dispatch(
        self, method: str, path: str, *, headers: dict[str, str], body: str | None, query: dict[str, list[str]]
    ) -> GatewayResponse | None:
        """The answer; None once the server is stopping."""
        ...


class LoopbackHttpServer(ThreadingHTTPServer):
    """One thread per connection, handing each request to `owner`."""

    daemon_threads = True
    allow_reuse_address = True  # a restarted server can take its port back from TIME_WAIT

    def __init__(self, address: tuple[str, int], owner: RequestDispatcher) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, ApiRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN (reverse DNS): not needed, and not local
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class ApiRequestHandler(BaseHTTPRequestHandler):
    """Each request, whatever its method, read whole and forwarded to the server's dispatcher."""

    server: LoopbackHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "restarter-local"
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_PATCH(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def do_OPTIONS(self) -> None:
        self._forward()

    def version_string(self) -> str:
        return self.server_version

    def _forward(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        path = unquote(url.path) or "/"
        stage_prefix = f"/{STAGE}{API_PREFIX}"
        if path == stage_prefix or path.startswith(stage_prefix + "/"):
            path = path.removeprefix(f"/{STAGE}")
        body = self._read_body()
        if body is None:
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            if name.lower() in _HOP_BY_HOP:
                continue
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = parse_qs(url.query, keep_blank_values=True)
        answer = owner.dispatch(
            self.command, path, headers=headers, body=body.decode("utf-8", errors="replace") or None, query=query
        )
        if answer is None:
            self.close_connection = True
            body = error_envelope("SERVICE_UNAVAILABLE", "The server is stopping")
            self._send(503, {"Content-Type": "application/json"}, body)
            return
        self._send(answer.status, answer.headers, answer.body.encode())

    def _read_body(self) -> bytes | None:
        """The request body; None when an error answer was already sent."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length else 0
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
                if size < 0:
                    raise ValueError(line)
            except ValueError:
                self.send_error(HTTPStatus.BAD_REQUEST, "Invalid chunked body")
                return None
            total += size
            if total > MAX_BODY_BYTES:
                self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
                return None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unsupported method, ...) in the API's envelope."""
        self.close_connection = True
        status, error_code = int(code), "VALIDATION_ERROR"
        details: dict[str, Any] = {}
        if status == HTTPStatus.NOT_IMPLEMENTED:  # a method http.server has no do_<METHOD> for
            status, error_code = 405, "METHOD_NOT_ALLOWED"
            message = f"{self.command} is not supported"
            details = {"allowed": list(METHODS)}
        elif status >= 500:
            error_code = "INTERNAL"
        body = error_envelope(error_code, message or HTTPStatus(status).phrase, details)
        self.send_response(status, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        if self.command == "HEAD" or status < 200 or status in (204, 304):
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.access_log:
            sys.stderr.write(f"{self.address_string()} - [{self.log_date_time_string()}] {format % args}\n")
