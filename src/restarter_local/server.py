"""`restarter serve`: the Restart Cluster API over HTTP on loopback, backed by the embedded AWS.

`LocalServer` starts `LocalAws`, seeds a fleet (a fleet file, or the default one), installs an
API key, and serves HTTP with `http.server.ThreadingHTTPServer`. Every request (method, path,
query, headers, body) goes through `LocalApiGateway.handle`, that is the Lambda authorizer, the
gateway responses and the API function, as API Gateway would run them; the answer is written
back as it comes. Paths are served both as `/v1/...` and with the stage prefix of an
execute-api URL (`/local/v1/...`, which the Swagger UI's "Try it out" uses).

Nothing reaches the network except loopback: the server binds only to the host it is given,
and refuses any host that is not a loopback address (127.0.0.0/8, ::1, `localhost`).

The API function runs like one warm Lambda container: one request at a time (its resolver
keeps the current request in module state). A `wait_for_ready` restart holds the API for at
most the API's wait budget; the other requests wait their turn.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.exceptions import ClientError
from pydantic import ValidationError

from restarter.domain.auth import split_key
from restarter.domain.models import Cluster
from restarter.domain.schedules import schedule_group
from restarter_local.engine import LocalAws
from restarter_local.fleet_file import (
    Fault,
    FleetFile,
    FleetFileError,
    apply_fault,
    instance_timings,
    load_fleet,
    seed_fleet,
)
from restarter_local.gateway import STAGE, GatewayResponse, LocalApiGateway

DEFAULT_HOST = "127.0.0.1"
FAULTS_PATH = "/local/faults"
# moto stores schedules but never fires them: this fires one now, as Scheduler would.
FIRE_SCHEDULE_PATH = re.compile(r"^/local/schedules/(?P<name>[0-9A-Za-z_.-]{1,64})/fire$")
DEFAULT_PORT = 8080
# Simulated seconds per real second: a 4-minute reboot takes 4 s, and the API's 25 s wait
# budget covers a restart of up to 25 simulated minutes.
DEFAULT_TIME_SCALE = 60.0
API_PREFIX = "/v1"
KEY_TENANT = "default"
KEY_SCOPES = ("read", "restart")
# API Gateway's payload limit; the API function itself refuses bodies over 64 KiB.
MAX_BODY_BYTES = 10 * 1024 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HOP_BY_HOP = frozenset({"connection", "content-length", "keep-alive", "transfer-encoding"})


class ServerError(Exception):
    """`restarter serve` cannot start as asked; the message is one line, meant for the user."""


# ------------------------------------------------------------------ checks before anything starts


def loopback_host(host: str) -> str:
    """The address to bind for `host`; ServerError unless it is a loopback address."""
    name = host.strip()
    if name.lower().rstrip(".") == "localhost":
        return DEFAULT_HOST
    literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ServerError(
            f"refusing to serve on {host!r}: restarter serve binds to loopback only "
            "(127.0.0.0/8, ::1 or localhost); nothing is exposed to the network"
        )
    return str(address)


def check_api_key(api_key: str) -> str:
    if split_key(api_key) is None:
        raise ServerError(
            "the API key must look like rk_<8 hex digits>_<32-128 letters, digits, '-' or '_'> "
            "(e.g. rk_0123abcd_ followed by 32 characters); omit --api-key to get a new one"
        )
    return api_key


# ------------------------------------------------------------------ HTTP


def _envelope(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    error = {"code": code, "message": message, "details": details or {}}
    return json.dumps({"success": False, "error": error}).encode()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted server can take its port back from TIME_WAIT

    def __init__(self, address: tuple[str, int], owner: LocalServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN (reverse DNS): not needed, and not local
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
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
            body = _envelope("SERVICE_UNAVAILABLE", "The server is stopping")
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
        body = _envelope(error_code, message or HTTPStatus(status).phrase, details)
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


# ------------------------------------------------------------------ the server


class LocalServer:
    """The API on loopback HTTP, backed by a fresh embedded AWS with a seeded fleet.

    Everything the caller can get wrong (host, port, API key, fleet file) is checked in the
    constructor, before anything starts. `start()` binds the port first, then starts the
    engine, so a port in use fails in milliseconds.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        fleet: FleetFile | Path | str | None = None,
        time_scale: float = DEFAULT_TIME_SCALE,
        api_key: str | None = None,
        access_log: bool = False,
    ) -> None:
        self.host = host
        self.bind_host = loopback_host(host)
        if not 0 <= port <= 65535:
            raise ServerError(f"port {port} is out of range: pass --port with a value from 1 to 65535")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ServerError(f"the time scale must be a positive number, not {time_scale}")
        self.port = port
        self.time_scale = time_scale
        self.fleet = fleet if isinstance(fleet, FleetFile) else load_fleet(fleet)
        self._requested_key = check_api_key(api_key) if api_key is not None else None
        self.access_log = access_log
        self.engine: LocalAws | None = None
        self.gateway: LocalApiGateway | None = None
        self.clusters: list[Cluster] = []
        self._api_key: str | None = None
        self._bound_port: int | None = None
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._api_lock = threading.Lock()
        self._stopping = False

    # --------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind, start the engine, seed the fleet, install the key, serve in a background thread."""
        if self._httpd is not None:
            raise ServerError("this server is already started")
        self._stopping = False
        self._httpd = self._bind()
        self._bound_port = int(self._httpd.server_address[1])
        try:
            self.engine = LocalAws(time_scale=self.time_scale)
            # instances take time to stop, start and reboot, as a real fleet's do
            self.engine.agent.timings = instance_timings(self.fleet, self.time_scale)
            self.engine.start()
            self.clusters = seed_fleet(self.engine, self.fleet)
            self._api_key = self._install_key(self.engine)
            self.gateway = LocalApiGateway(self.engine)
        except BaseException:
            self._httpd.server_close()
            self._httpd = None
            self._stop_engine()
            raise
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="restarter-serve", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, let the request in flight finish, then stop the engine. Idempotent."""
        self._stopping = True
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            if self._thread is not None:
                httpd.shutdown()
                self._thread.join()
                self._thread = None
            httpd.server_close()
        with self._api_lock:  # a request in flight must not outlive the engine it runs on
            self._stop_engine()

    def _stop_engine(self) -> None:
        engine, self.engine = self.engine, None
        self.gateway = None
        if engine is not None:
            engine.stop()

    def _bind(self) -> _HttpServer:
        try:
            return _HttpServer((self.bind_host, self.port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerError(f"port {self.port} is in use on {self.bind_host}: pass --port") from exc
            if exc.errno == errno.EACCES:
                raise ServerError(
                    f"not allowed to listen on port {self.port} of {self.bind_host}: pass --port above 1023"
                ) from exc
            reason = exc.strerror or str(exc)
            raise ServerError(f"cannot listen on {self.bind_host} port {self.port}: {reason}") from exc

    def _install_key(self, engine: LocalAws) -> str:
        assert engine.api_keys is not None
        if self._requested_key is not None:
            engine.api_keys.put_known_key(
                self._requested_key, KEY_TENANT, KEY_SCOPES, name="local", now=engine.clock.now()
            )
            return self._requested_key
        key, _ = engine.api_keys.create_key(KEY_TENANT, KEY_SCOPES, name="local", now=engine.clock.now())
        return key

    # --------------------------------------------------------------- requests
    def dispatch(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: str | None,
        query: dict[str, list[str]],
    ) -> GatewayResponse | None:
        """One request through the local API Gateway; None once the server is stopping."""
        with self._api_lock:
            gateway = self.gateway
            if self._stopping or gateway is None:
                return None
            try:
                if path == FAULTS_PATH:
                    return self._inject_fault(method, headers, body)
                if fire := FIRE_SCHEDULE_PATH.match(path):
                    return self._fire_schedule(method, headers, fire["name"])
                return gateway.handle(method, path, headers=headers, body=body, query=query)
            except Exception:  # API Gateway answers 502 when the integration fails
                logging.getLogger(__name__).exception("request failed: %s %s", method, path)
                return GatewayResponse(
                    502, {"Content-Type": "application/json"}, _envelope("INTERNAL", "Internal error").decode()
                )

    def _local_only(self, method: str, headers: dict[str, str]) -> GatewayResponse | None:
        """The local endpoints take a POST with the server's own key."""
        json_headers = {"Content-Type": "application/json"}
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if authorization != f"Bearer {self._api_key}":
            return GatewayResponse(401, json_headers, _envelope("UNAUTHORIZED", "Missing or invalid API key").decode())
        if method != "POST":
            return GatewayResponse(405, json_headers, _envelope("METHOD_NOT_ALLOWED", "Use POST").decode())
        return None

    def _fire_schedule(self, method: str, headers: dict[str, str], name: str) -> GatewayResponse:
        """`POST /local/schedules/{name}/fire` (local only): deliver the key's tenant schedule's
        firing now, as EventBridge Scheduler would at its scheduled time."""
        refused = self._local_only(method, headers)
        if refused is not None:
            return refused
        assert self.engine is not None
        json_headers = {"Content-Type": "application/json"}
        try:
            answer = self.engine.fire_schedule(name, schedule_group(KEY_TENANT))
        except ClientError:
            message = f"No schedule {name} for this key's tenant"
            return GatewayResponse(404, json_headers, _envelope("NOT_FOUND", message, {"name": name}).decode())
        except ValueError as exc:
            return GatewayResponse(409, json_headers, _envelope("INVALID_STATE", str(exc)).decode())
        return GatewayResponse(200 if answer.get("success") else 400, json_headers, json.dumps(answer))

    def _inject_fault(self, method: str, headers: dict[str, str], body: str | None) -> GatewayResponse:
        """`POST /local/faults` (local only, with the server's key): inject a fault while serving."""
        json_headers = {"Content-Type": "application/json"}
        refused = self._local_only(method, headers)
        if refused is not None:
            return refused
        assert self.engine is not None
        try:
            fault = Fault.model_validate_json(body or "{}")
            apply_fault(self.engine, fault, {c.id: c for c in self.clusters})
        except (ValueError, ValidationError) as exc:
            message = " ".join(str(exc).split())[:500]
            return GatewayResponse(400, json_headers, _envelope("VALIDATION_ERROR", message).decode())
        payload = {"success": True, "data": fault.model_dump(mode="json", exclude_none=True)}
        return GatewayResponse(200, json_headers, json.dumps(payload))

    # --------------------------------------------------------------- what the user needs
    @property
    def bound_port(self) -> int:
        """The port listened on (the ephemeral one when `port` was 0)."""
        if self._bound_port is None:
            raise ServerError("the server is not started")
        return self._bound_port

    @property
    def root_url(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"http://{host}:{self.bound_port}"

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. `http://127.0.0.1:8080/v1`."""
        return f"{self.root_url}{API_PREFIX}"

    @property
    def docs_url(self) -> str:
        return f"{self.base_url}/docs"

    @property
    def api_key(self) -> str:
        if self._api_key is None:
            raise ServerError("the server is not started")
        return self._api_key

    def banner(self) -> str:
        lines = [
            f"restarter: the Restart Cluster API on the embedded AWS (simulated time x{self.time_scale:g})",
            f"  base URL    {self.base_url}",
            f"  API key     {self.api_key}   (tenant {KEY_TENANT}: read, restart)",
            f"  Swagger UI  {self.docs_url}",
            f"  OpenAPI     {self.base_url}/openapi.json",
            f"  fleet       {self.fleet.source}",
        ]
        for cluster in self.clusters:
            shape = f"{len(cluster.instance_ids)}x {cluster.instance_type}"
            tenant = "" if cluster.tenant_id == KEY_TENANT else f", tenant {cluster.tenant_id}"
            lines.append(f"    {cluster.id:<16} {cluster.name} ({shape}, {cluster.status}{tenant})")
        if self.fleet.faults:
            lines.append(f"    faults: {', '.join(f.kind for f in self.fleet.faults)}")
        lines += [
            "try:",
            f'  curl -H "Authorization: Bearer {self.api_key}" {self.base_url}/clusters',
            "Ctrl-C stops the server.",
        ]
        return "\n".join(lines)

    def serve_forever_until_interrupted(self) -> int:
        """Start if needed, print where to reach the API, block until Ctrl-C (or SIGTERM), stop."""
        if self._httpd is None:
            self.start()
        previous = None
        try:
            previous = _sigterm_as_interrupt()
            print(self.banner(), flush=True)
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            print("\nstopping: finishing the request and restarts in flight ...", flush=True)
        finally:
            _restore_sigterm(previous)
            try:
                self.stop()
            except KeyboardInterrupt:
                print("interrupted again: exiting without waiting", file=sys.stderr, flush=True)
                return 130
        print("stopped", flush=True)
        return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _sigterm_as_interrupt() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _quiet_logs() -> None:
    """Warnings and errors only, unless the user asked for a log level."""
    level = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "WARNING"
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", level)
    logging.getLogger().setLevel(level)
    # moto's interpreter logs every failed execution at ERROR; the restart records say why.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from restarter.observability import logger

    logger.setLevel(level)


def main_serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    fleet: Path | str | None = None,
    time_scale: float = DEFAULT_TIME_SCALE,
    api_key: str | None = None,
) -> int:
    """`restarter serve`: 2 with a one-line error when it cannot start, else 0 once stopped."""
    _quiet_logs()
    try:
        server = LocalServer(host=host, port=port, fleet=fleet, time_scale=time_scale, api_key=api_key, access_log=True)
        server.start()
    except (ServerError, FleetFileError) as exc:
        print(f"restarter serve: {exc}", file=sys.stderr)
        return 2
    return server.serve_forever_until_interrupted()
