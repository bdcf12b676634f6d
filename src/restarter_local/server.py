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

Beside it: the HTTP reading and writing in `http_handler`, the local-only endpoints
(`/local/faults`, `/local/schedules/{name}/fire`) in `local_control`, the `restarter serve`
command (`main_serve`) in `serve_command`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from restarter.domain.auth import split_key
from restarter.domain.models import Cluster
from restarter_local.engine import LocalAws
from restarter_local.fleet_file import FleetFile, instance_timings, load_fleet, seed_fleet
from restarter_local.gateway import GatewayResponse, LocalApiGateway
from restarter_local.http_handler import API_PREFIX, LoopbackHttpServer, error_envelope
from restarter_local.local_control import LocalControl

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Simulated seconds per real second: a 4-minute reboot takes 4 s, and the API's 25 s wait
# budget covers a restart of up to 25 simulated minutes.
DEFAULT_TIME_SCALE = 60.0
KEY_TENANT = "default"
KEY_SCOPES = ("read", "restart")


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
        self.control: LocalControl | None = None
        self.clusters: list[Cluster] = []
        self._api_key: str | None = None
        self._bound_port: int | None = None
        self._httpd: LoopbackHttpServer | None = None
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
            self.control = LocalControl(self.engine, self._api_key, KEY_TENANT, self.clusters)
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
        self.control = None
        if engine is not None:
            engine.stop()

    def _bind(self) -> LoopbackHttpServer:
        try:
            return LoopbackHttpServer((self.bind_host, self.port), self)
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
            gateway, control = self.gateway, self.control
            if self._stopping or gateway is None or control is None:
                return None
            try:
                local_answer = control.answer(method, path, headers, body)
                if local_answer is not None:
                    return local_answer
                return gateway.handle(method, path, headers=headers, body=body, query=query)
            except Exception:  # API Gateway answers 502 when the integration fails
                logging.getLogger(__name__).exception("request failed: %s %s", method, path)
                return GatewayResponse(
                    502, {"Content-Type": "application/json"}, error_envelope("INTERNAL", "Internal error").decode()
                )

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
