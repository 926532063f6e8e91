"""WebSocket + HTTP server for the browser viewer: a pipeline sink.

One port serves both the static viewer (`web_viewer/`, page at `/`) and the stream (`/ws`),
using websockets' `process_request` hook for the plain HTTP GETs. The asyncio loop runs in
its own thread; the pipeline calls `publish(frame, jpeg)` from any thread and never waits:

    with PoseServer(port=8765, token=None) as server:      # start() ... stop()
        for frame in pipeline:
            server.publish(frame, jpeg=maybe_thumbnail)     # non-blocking, thread-safe

Backpressure is latest-only at every step: `publish` overwrites a 1-slot server mailbox and
wakes the loop once; the loop overwrites each client's 1-slot mailbox; each client has its own
sender task. A slow client therefore only misses frames (counted, reported in `stats`
messages); it never slows the pipeline or the other clients. Late joiners get hello and the
current frame at once. Inbound rules (size, rate, auth and its back-off, garbage) live in
`realtime.protocol`.

Each websocket connection holds a slot under `Limits.max_clients` from its handshake until its
TCP connection is lost (whatever the path: see `_connection_class`). Every HTTP request gets a
status (404/405/414/400/403/503), never a traceback; repeated warnings go through a
`realtime.loglimit.LogLimiter`, so a storm of clients costs a few log lines a minute.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from engines.errors import UserError
from realtime.frames import PoseFrame
from realtime.loglimit import LogLimiter
from realtime.protocol import (CLOSE_GOING_AWAY, HTTP_METHODS, LOOPBACK_HOSTS, AuthBackoff, ClientSession,
                               ConnectionLimiter, Limits, Slot, Throttle, address_key, encode_frame, encode_hello,
                               encode_thumb, host_allowed, origin_allowed, refused_method, stats_message)

log = logging.getLogger("posestream.server")
# websockets' own messages: it logs every static file as "connection rejected (200 OK)" at INFO,
# so its logger is quiet below WARNING unless the application sets a level for it.
ws_log = logging.getLogger("posestream.server.websockets")
if ws_log.level == logging.NOTSET:
    ws_log.setLevel(logging.WARNING)
ws_log.addFilter(LogLimiter())  # its errors come with tracebacks: never a flood of them

TOKEN_ENV = "POSESTREAM_TOKEN"

WS_PATH = "/ws"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json"}
MAX_STATIC_BYTES = 8 * 1024 * 1024
STATS_INTERVAL_S = 1.0
MAX_DISCARD_BYTES = 1024 * 1024  # request body read (and dropped) after a 405, then the connection is cut
_NOT_ALLOWED_BODY = b"method not allowed\n"
_METHOD_NOT_ALLOWED = (b"HTTP/1.1 405 Method Not Allowed\r\nAllow: " + ", ".join(HTTP_METHODS).encode()
                       + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "
                       + str(len(_NOT_ALLOWED_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _NOT_ALLOWED_BODY)


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    name = host.lower().strip("[]")
    if name in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def add_token_arguments(group: argparse._ActionsContainer, what: str = "viewers must present this token") -> None:
    """--token / --token-file, shared by `serve` and the live commands' --serve."""
    group.add_argument("--token", help=f"{what} (default: ${TOKEN_ENV} if set, else none). Other users can read "
                                       f"a command line (ps, /proc/PID/cmdline): prefer --token-file or ${TOKEN_ENV}")
    group.add_argument("--token-file", type=Path, metavar="FILE",
                       help="read the token from FILE (its first line; keep the file private)")


def token_from_args(args: argparse.Namespace, environ: Any = None) -> str | None:
    """The token the options ask for: --token, else --token-file, else $POSESTREAM_TOKEN, else
    None. An empty variable counts as unset (with a warning); an empty option or file, or both
    options at once, are UserErrors."""
    environ = os.environ if environ is None else environ
    token, token_file = getattr(args, "token", None), getattr(args, "token_file", None)
    if token is not None and token_file is not None:
        raise UserError("give --token or --token-file, not both")
    if token is not None:
        if not token:
            raise UserError("--token must not be empty")
        return token
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --token-file {token_file}: {exc}") from None
        if not token:
            raise UserError(f"--token-file {token_file} is empty")
        return token
    token = environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        log.warning("%s is set but empty: ignored (no token)", TOKEN_ENV)
        return None
    return token.strip() if token is not None else None


def default_static_dir() -> Path:
    from web_viewer import STATIC_DIR
    return STATIC_DIR


def resolve_static(static_dir: Path, url_path: str) -> Path | None:
    """Map a URL path to a file under static_dir, or None (outside it, hidden, unknown type, or a
    path the file system refuses, e.g. a name too long)."""
    path = unquote(url_path)
    if path in ("", "/"):
        path = "/index.html"
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts) or not parts:
        return None
    if "node_modules" in parts:
        return None
    try:
        root = static_dir.resolve()
        target = (root / Path(*parts)).resolve()
        if not target.is_relative_to(root) or target.suffix not in STATIC_TYPES or not target.is_file():
            return None
    except (OSError, ValueError):
        return None
    return target


@functools.cache
def _connection_class() -> type:
    """websockets' server connection, with the viewer slot tied to the TCP connection's
    lifetime: taken in `process_request`, given back in `connection_lost`, which asyncio calls
    exactly once per accepted connection whatever ends it (a normal close, a reset, a client
    that closes right after the upgrade so that websockets never runs the handler, an opening
    handshake that times out). Imported lazily: websockets is needed only to serve."""
    from websockets.asyncio.server import ServerConnection

    class ViewerConnection(ServerConnection):
        """Also answers methods other than GET/HEAD with 405 from the request's first bytes:
        websockets' handshake parser would close such a request (POST with a body) unanswered.
        After the 405, the rest of the request is read and dropped (up to MAX_DISCARD_BYTES, and
        `open_timeout`) so the client reads the answer rather than a reset."""

        slot: Slot | None = None
        _head = b""             # the first bytes, until the method is known
        _sniffing = True
        _refused = False
        _discarded = 0

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._discarded += len(data)
                if self._discarded > MAX_DISCARD_BYTES:
                    self.transport.abort()
                return
            if self._sniffing:
                head = self._head + data
                verdict = refused_method(head)
                if verdict is None:
                    self._head = head
                    return
                self._sniffing, self._head, data = False, b"", head
                if verdict:
                    self._refused = True
                    self.transport.write(_METHOD_NOT_ALLOWED)
                    self.transport.write_eof()
                    return
            super().data_received(data)

        def eof_received(self) -> None:
            if self._refused:
                return None     # the transport closes once the 405 is written
            if self._sniffing and self._head:
                self._sniffing, head, self._head = False, self._head, b""
                super().data_received(head)
            return super().eof_received()

        def connection_lost(self, exc: Exception | None) -> None:
            try:
                super().connection_lost(exc)
            finally:
                if self.slot is not None:
                    self.slot.release()

    return ViewerConnection


@dataclass(eq=False)
class _Client:
    """One connection's outbound state (loop thread only)."""

    conn: Any
    session: ClientSession
    frame: str | None = None        # 1-slot mailbox: latest frame text not yet sent
    thumb: bytes | None = None      # 1-slot mailbox for the thumbnail channel
    dropped: int = 0                # frames published while live that this client will never get
    sent: int = 0                   # frame messages sent to it
    wake: asyncio.Event | None = None
    live: bool = False              # authorised and hello sent: frames may be delivered
    stats_due: bool = False         # the sender sends a stats message (built when sent)
    done: bool = False              # the handler has finished: the sender stops
    sender: asyncio.Task[None] | None = None


class PoseServer:
    """The viewer server. `port=0` picks a free port (read `.port` after `start()`).

    token:  when set, clients must present it (`/ws?token=...` or an `auth` message).
    source: free-form description sent in hello (e.g. {"kind": "replay", "fps": 30}).
    allowed_origins: extra page origins (e.g. "http://myhost:9000") allowed to open the stream;
            the server's own pages and non-browser clients are always allowed.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 limits: Limits | None = None, static_dir: Path | None = None,
                 source: dict[str, Any] | None = None, allowed_origins: tuple[str, ...] = ()) -> None:
        if token is not None and not token:
            raise UserError("the token must not be empty")
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.token = token
        self.limits = limits or Limits()
        self.static_dir = Path(static_dir) if static_dir is not None else default_static_dir()
        self.source = dict(source or {})
        self.allowed_origins = tuple(allowed_origins)
        self._lock = threading.Lock()
        self._pending: tuple[str, bytes | None] | None = None
        self._skipped = 0           # frames overwritten in the server mailbox since the last fan-out
        self._wakeup_scheduled = False
        self._thumb_throttle = Throttle(self.limits.thumb_max_fps)
        self._thumb_subscribers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._clients: set[_Client] = set()
        self._conn_limit = ConnectionLimiter(self.limits.max_clients)
        self._backoff = AuthBackoff(free=self.limits.auth_backoff_free, base_s=self.limits.auth_backoff_base_s,
                                    max_s=self.limits.auth_backoff_max_s,
                                    forget_s=max(900.0, 15 * self.limits.auth_backoff_max_s))
        self._log = LogLimiter(burst=5, period_s=30.0)   # repeated warnings: a few, then summaries
        self._current: str | None = None
        self._current_thumb: bytes | None = None
        self.published = 0
        self.thumbs_published = 0
        self.rejected_connections = 0

    # ------------------------------------------------------------------ lifecycle (any thread)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host  # IPv6
        return f"http://{host}:{self.port}/"

    def start(self, timeout_s: float = 10.0) -> "PoseServer":
        """Bind and serve in a background thread; returns once listening. Raises UserError if
        the port cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if not (self.static_dir / "index.html").is_file():
            raise UserError(f"viewer files not found in {self.static_dir}")
        self._thread = threading.Thread(target=self._thread_main, name="posestream-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise UserError(f"server did not start within {timeout_s} s")
        if self._startup_error is not None:
            self._thread.join(timeout_s)
            self._thread = None
            exc = self._startup_error
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise UserError(f"cannot serve on {self.host}:{self.requested_port}: the port is already in use "
                                f"(another posestream running?); choose another --port, or --port 0 for any "
                                f"free one") from exc
            raise UserError(f"cannot serve on {self.host}:{self.requested_port}: {exc}") from exc
        # Warned once listening: a host that cannot be bound gets its error alone, not a
        # warning about a server that never ran.
        if self.token is None and not is_loopback(self.host):
            log.warning("serving on %s without a token: anyone who can reach port %s can watch; set %s or "
                        "use --token-file", self.host, self.port, TOKEN_ENV)
        if not (self.static_dir / "vendor" / "three" / "three.module.js").is_file():
            log.warning("three.js is not vendored in %s/vendor: the page cannot render; "
                        "run `npm ci --prefix web_viewer`", self.static_dir)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close every connection (1001 going away) and stop the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None and self._stop_event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop_event.set)
            except RuntimeError:
                pass
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("server thread still running %.1f s after stop()", timeout_s)
        self._thread = None

    close = stop

    def __enter__(self) -> "PoseServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the sink API (any thread)

    def wants_thumbnail(self) -> bool:
        """True when some client subscribed to thumbnails and the throttle would pass one now:
        the pipeline can skip JPEG encoding otherwise."""
        return self._thumb_subscribers > 0 and self._thumb_throttle.ready(time.monotonic())

    def publish(self, frame: PoseFrame, jpeg: bytes | None = None) -> None:
        """Hand the newest frame (and optionally a JPEG of the 2D overlay) to every viewer.
        Thread-safe, never blocks on the network: encodes the frame and overwrites a 1-slot
        mailbox. Thumbnails beyond `Limits.thumb_max_fps` or `max_thumb_bytes` are dropped."""
        text = encode_frame(frame, pub_ms=time.time() * 1000.0)
        if jpeg is not None and len(jpeg) > self.limits.max_thumb_bytes:
            self._log.log(log, logging.WARNING, "thumbnail of %d bytes dropped (limit %d)", len(jpeg),
                          self.limits.max_thumb_bytes)
            jpeg = None
        with self._lock:
            thumb = None
            if jpeg is not None and self._thumb_throttle.allow(time.monotonic()):
                thumb = encode_thumb(frame.index, jpeg)
                self.thumbs_published += 1
            elif self._pending is not None and self._pending[1] is not None:
                thumb = self._pending[1]  # keep an undelivered thumbnail
            self.published += 1
            if self._pending is not None:
                self._skipped += 1   # never fanned out: every live client misses it
            self._pending = (text, thumb)
            loop = self._loop
            if self._wakeup_scheduled or loop is None:
                return
            self._wakeup_scheduled = True
        try:
            loop.call_soon_threadsafe(self._fanout)
        except RuntimeError:  # loop closed: the server stopped
            pass

    def stats(self) -> dict[str, Any]:
        """Counters for tests and logs (a snapshot; read from any thread)."""
        clients = list(self._clients)
        return {"clients": len(clients), "published": self.published, "thumbs_published": self.thumbs_published,
                "rejected_connections": self.rejected_connections,
                "slots_held": self._conn_limit.active,
                "per_client": [{"sent": c.sent, "dropped": c.dropped, "live": c.live} for c in clients]}

    # ------------------------------------------------------------------ loop thread

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                log.exception("server thread crashed")

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        async with serve(self._handler, self.host, self.requested_port, process_request=self._process_request,
                         max_size=self.limits.max_inbound_bytes, max_queue=4, compression=None,
                         ping_interval=20, ping_timeout=20, close_timeout=2, open_timeout=10,
                         process_response=self._process_response, write_limit=64 * 1024,
                         logger=ws_log, create_connection=_connection_class()) as server:
            self.port = server.sockets[0].getsockname()[1]
            stats_task = asyncio.create_task(self._stats_loop())
            self._ready.set()
            self._fanout()  # a frame published before the loop ran becomes the current state
            log.info("viewer at http://%s:%s/ (stream at %s)%s", self.host, self.port, WS_PATH,
                     " - token required" if self.token else "")
            await self._stop_event.wait()
            stats_task.cancel()
            await self._close_all()
        self._log.flush(force=True)
        self._loop = None

    async def _close_all(self, timeout_s: float = 2.0) -> None:
        """Close every connection (1001) concurrently; abort those whose closing handshake cannot
        finish in `timeout_s` (a client that stopped reading has a full socket buffer)."""
        clients = list(self._clients)
        if not clients:
            return
        closers = [asyncio.create_task(c.conn.close(CLOSE_GOING_AWAY, "server shutting down")) for c in clients]
        _, pending = await asyncio.wait(closers, timeout=timeout_s)
        for task in pending:
            task.cancel()
        for c in clients:
            transport = getattr(c.conn, "transport", None)
            if transport is not None and not transport.is_closing():
                self._log.log(log, logging.WARNING, "client %s did not close in %.1f s: aborted",
                              c.conn.remote_address, timeout_s)
                transport.abort()
        await asyncio.gather(*closers, return_exceptions=True)

    def _process_request(self, connection: Any, request: Any) -> Any:
        """HTTP side: static files for any path but /ws; checks and the connection limit for /ws.
        Whatever a request holds, the answer is an HTTP status, never a traceback in the log."""
        try:
            return self._answer(connection, request)
        except Exception as exc:  # noqa: BLE001 - a bug here must cost one log line, not a traceback per request
            self._log.log(log, logging.ERROR, "request %s %.80s failed: %s: %s", request.method, request.path,
                          type(exc).__name__, exc)
            log.debug("request failed", exc_info=True)
            return connection.respond(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")

    def _refuse(self, connection: Any, status: HTTPStatus, text: str, why: str, *args: Any) -> Any:
        self._log.log(log, logging.WARNING, "request refused (%d): " + why, status.value, *args)
        return connection.respond(status, text)

    def _answer(self, connection: Any, request: Any) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        try:
            parts = urlsplit(request.path)
        except ValueError:
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "bad request\n", "unparsable path %.80r",
                                request.path)
        if len(parts.path) > self.limits.max_path_chars:
            return connection.respond(HTTPStatus.REQUEST_URI_TOO_LONG, "path too long\n")
        hosts = request.headers.get_all("Host")
        if len(hosts) > 1:
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "more than one Host header\n",
                                "%d Host headers", len(hosts))
        host = hosts[0] if hosts else None
        if not host_allowed(host, self.host):
            return self._refuse(connection, HTTPStatus.FORBIDDEN, "forbidden host\n",
                                "Host %.80r is not a loopback name (DNS rebinding guard)", host)
        if request.method not in HTTP_METHODS:  # normally answered from the first bytes (ViewerConnection)
            response = connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n")
            response.headers["Allow"] = ", ".join(HTTP_METHODS)
            return response
        if parts.path == WS_PATH:
            if request.method != "GET":
                response = connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, "the stream needs a GET upgrade\n")
                response.headers["Allow"] = "GET"
                return response
            origins = request.headers.get_all("Origin")
            if len(origins) > 1:
                return self._refuse(connection, HTTPStatus.FORBIDDEN, "more than one Origin header\n",
                                    "%d Origin headers", len(origins))
            origin = origins[0] if origins else None
            if not origin_allowed(origin, host, self.allowed_origins):
                return self._refuse(connection, HTTPStatus.FORBIDDEN, "cross-site websocket refused\n",
                                    "cross-site Origin %.80r", origin)
            slot = self._conn_limit.try_acquire()
            if slot is None:
                self.rejected_connections += 1
                return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "too many viewers\n",
                                    "%d viewers already (limit)", self.limits.max_clients)
            connection.slot = slot  # released when the connection is lost (or below if the upgrade fails)
            return None
        target = resolve_static(self.static_dir, parts.path)
        if target is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        try:
            if target.stat().st_size > MAX_STATIC_BYTES:
                return connection.respond(HTTPStatus.FORBIDDEN, "file too large\n")
            body = target.read_bytes()
        except OSError:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        headers = Headers([("Content-Type", STATIC_TYPES[target.suffix]), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-cache"), ("Connection", "close"),
                           ("X-Content-Type-Options", "nosniff")])
        return Response(HTTPStatus.OK.value, "OK", headers, b"" if request.method == "HEAD" else body)

    def _process_response(self, connection: Any, request: Any, response: Any) -> None:
        """Give the connection slot back at once when a /ws handshake did not upgrade."""
        if connection.slot is not None and response.status_code != 101:
            connection.slot.release()
        return None

    async def _handler(self, conn: Any) -> None:
        query = parse_qs(urlsplit(conn.request.path).query)
        token = query.get("token", [None])[0]
        thumbs = query.get("thumbs", ["0"])[0] in ("1", "true")
        now = time.monotonic()
        peer = conn.remote_address
        address = address_key(str(peer[0])) if peer else ""
        client = _Client(conn, ClientSession(self.limits, self.token, token, now, thumbs=thumbs,
                                             backoff=self._backoff, address=address), wake=asyncio.Event())
        self._clients.add(client)
        client.sender = asyncio.create_task(self._sender(client))
        auth_timer = None
        try:
            for text in client.session.opening():
                await conn.send(text)
            if client.session.authorised:
                await self._go_live(client)
            else:
                auth_timer = asyncio.create_task(self._auth_timeout(client))
            async for data in conn:
                reply = client.session.on_message(data, time.monotonic(), time.time() * 1000.0)
                if reply.log:
                    self._log.log(log, logging.INFO, "client %s: %s", peer, reply.log)
                for text in reply.send:
                    await conn.send(text)
                if reply.authorised:
                    await self._go_live(client)
                if reply.close is not None:
                    self._log.log(log, logging.WARNING, "closing client %s: %s", peer, reply.close[1])
                    await conn.close(*reply.close)
                    break
                self._update_thumb_subscribers()
        except Exception as exc:  # noqa: BLE001 - a client must never take the server down
            from websockets.exceptions import ConnectionClosed
            if not isinstance(exc, ConnectionClosed):
                self._log.log(log, logging.ERROR, "client %s: unexpected error", peer, exc_info=True)
        finally:
            client.done = True      # the sender stops by itself (never cancelled mid-send; see _sender)
            client.wake.set()
            if auth_timer is not None:
                auth_timer.cancel()
            self._clients.discard(client)
            sent_close = getattr(conn.protocol, "close_sent", None)
            self._log.log(log, logging.INFO, "client %s left (close received %s, sent %s; frames sent %d, dropped %d)",
                          peer, conn.close_code, sent_close.code if sent_close is not None else None, client.sent,
                          client.dropped)
            self._update_thumb_subscribers()

    async def _go_live(self, client: _Client) -> None:
        await client.conn.send(encode_hello(auth_required=self.token is not None,
                                            thumb_max_fps=self.limits.thumb_max_fps, source=self.source))
        client.live = True
        if self._current is not None:   # late joiner: the current state at once
            client.frame = self._current
        if client.session.thumbs and self._current_thumb is not None:
            client.thumb = self._current_thumb
        client.wake.set()
        self._update_thumb_subscribers()

    async def _auth_timeout(self, client: _Client) -> None:
        await asyncio.sleep(self.limits.auth_timeout_s)
        if client.session.auth_expired(time.monotonic()):
            self._log.log(log, logging.WARNING, "closing client %s: no token within %.0f s",
                          client.conn.remote_address, self.limits.auth_timeout_s)
            await client.conn.close(1008, "authentication timeout")

    def _update_thumb_subscribers(self) -> None:
        self._thumb_subscribers = sum(1 for c in self._clients if c.live and c.session.thumbs)

    def _fanout(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            skipped, self._skipped = self._skipped, 0
            self._wakeup_scheduled = False
        if pending is None:
            return
        text, thumb = pending
        self._current = text
        if thumb is not None:
            self._current_thumb = thumb
        for c in self._clients:
            if not c.live:
                continue
            # Lost for this client: frames overwritten in the server mailbox before this fan-out,
            # and the one still unsent in its own mailbox.
            c.dropped += skipped + (c.frame is not None)
            c.frame = text
            if thumb is not None and c.session.thumbs:
                c.thumb = thumb
            c.wake.set()

    async def _sender(self, client: _Client) -> None:
        """Per-client task, the only one that sends frames, thumbnails and stats to this client:
        send whatever is in the mailbox; awaiting a slow socket here only delays this client.
        A send is never cancelled (websockets advises against it; a cancelled send left tasks
        pending forever): one that takes longer than `send_timeout_s` aborts the connection,
        which ends the send."""
        while not client.done:
            await client.wake.wait()
            client.wake.clear()
            if client.done:
                return
            text, client.frame = client.frame, None
            thumb, client.thumb = client.thumb, None
            for message in (text, thumb, "stats"):
                if message == "stats":
                    if not client.stats_due:
                        continue
                    client.stats_due = False
                    message = stats_message(clients=len(self._clients), published=self.published,
                                            dropped=client.dropped, sent=client.sent)
                elif message is None:
                    continue
                if not await self._send(client, message):
                    return
                if message is text:
                    client.sent += 1

    async def _send(self, client: _Client, message: str | bytes) -> bool:
        """Send one message; False when the connection is closed or was aborted as stalled."""
        send = asyncio.ensure_future(client.conn.send(message))
        done, _ = await asyncio.wait({send}, timeout=self.limits.send_timeout_s)
        if not done:
            self._log.log(log, logging.WARNING, "client %s stalled for %.1f s: dropped", client.conn.remote_address,
                          self.limits.send_timeout_s)
            send.add_done_callback(_retrieve)   # ends with ConnectionClosed once the abort is processed
            client.conn.transport.abort()
            return False
        return send.exception() is None

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            self._log.flush()
            for c in self._clients:
                if c.live:
                    c.stats_due = True
                    c.wake.set()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: fetch a task's exception so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
