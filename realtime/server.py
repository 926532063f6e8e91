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
current frame at once. Inbound rules (size, rate, auth, garbage) live in `realtime.protocol`.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import mimetypes
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from engines.errors import UserError
from realtime.frames import PoseFrame
from realtime.protocol import (CLOSE_GOING_AWAY, ClientSession, ConnectionLimiter, Limits, Slot, Throttle,
                               encode_frame, encode_hello, encode_thumb, host_allowed, origin_allowed, stats_message)

log = logging.getLogger("posestream.server")
# websockets' own messages: it logs every static file as "connection rejected (200 OK)" at INFO,
# so its logger is quiet below WARNING unless the application sets a level for it.
ws_log = logging.getLogger("posestream.server.websockets")
if ws_log.level == logging.NOTSET:
    ws_log.setLevel(logging.WARNING)

WS_PATH = "/ws"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json"}
MAX_STATIC_BYTES = 8 * 1024 * 1024
STATS_INTERVAL_S = 1.0


def default_static_dir() -> Path:
    from web_viewer import STATIC_DIR
    return STATIC_DIR


def resolve_static(static_dir: Path, url_path: str) -> Path | None:
    """Map a URL path to a file under static_dir, or None (outside it, hidden, unknown type)."""
    path = unquote(url_path)
    if path in ("", "/"):
        path = "/index.html"
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts) or not parts:
        return None
    if "node_modules" in parts:
        return None
    root = static_dir.resolve()
    target = (root / Path(*parts)).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.suffix not in STATIC_TYPES:
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
        slot: Slot | None = None

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
    dropped: int = 0                # frames overwritten before they were sent
    sent: int = 0
    wake: asyncio.Event | None = None
    live: bool = False              # authorised and hello sent: frames may be delivered


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
            raise UserError("--token must not be empty")
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
        self._current: str | None = None
        self._current_thumb: bytes | None = None
        self.published = 0
        self.thumbs_published = 0
        self.rejected_connections = 0

    # ------------------------------------------------------------------ lifecycle (any thread)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 10.0) -> "PoseServer":
        """Bind and serve in a background thread; returns once listening. Raises UserError if
        the port cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if not (self.static_dir / "index.html").is_file():
            raise UserError(f"viewer files not found in {self.static_dir}")
        if not (self.static_dir / "vendor" / "three" / "three.module.js").is_file():
            log.warning("three.js is not vendored in %s/vendor: the page cannot render; "
                        "run `npm ci --prefix web_viewer`", self.static_dir)
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
            log.warning("thumbnail of %d bytes dropped (limit %d)", len(jpeg), self.limits.max_thumb_bytes)
            jpeg = None
        with self._lock:
            thumb = None
            if jpeg is not None and self._thumb_throttle.allow(time.monotonic()):
                thumb = encode_thumb(frame.index, jpeg)
                self.thumbs_published += 1
            elif self._pending is not None and self._pending[1] is not None:
                thumb = self._pending[1]  # keep an undelivered thumbnail
            self.published += 1
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
                log.warning("client %s did not close in %.1f s: aborted", c.conn.remote_address, timeout_s)
                transport.abort()
        await asyncio.gather(*closers, return_exceptions=True)

    def _process_request(self, connection: Any, request: Any) -> Any:
        """HTTP side: static files for any path but /ws; connection limit for /ws."""
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        parts = urlsplit(request.path)
        host = request.headers.get("Host")
        if not host_allowed(host, self.host):
            log.warning("request refused: Host %r is not a loopback name (DNS rebinding guard)", host)
            return connection.respond(HTTPStatus.FORBIDDEN, "forbidden host\n")
        if parts.path == WS_PATH:
            origin = request.headers.get("Origin")
            if not origin_allowed(origin, host, self.allowed_origins):
                log.warning("websocket refused: cross-site Origin %r", origin)
                return connection.respond(HTTPStatus.FORBIDDEN, "cross-site websocket refused\n")
            slot = self._conn_limit.try_acquire()
            if slot is None:
                self.rejected_connections += 1
                log.warning("connection refused: %d clients already (limit)", self.limits.max_clients)
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many viewers\n")
            connection.slot = slot  # released when the connection is lost (or below if the upgrade fails)
            return None
        target = resolve_static(self.static_dir, parts.path)
        if target is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        size = target.stat().st_size
        if size > MAX_STATIC_BYTES:
            return connection.respond(HTTPStatus.FORBIDDEN, "file too large\n")
        body = target.read_bytes()
        headers = Headers([("Content-Type", STATIC_TYPES[target.suffix]), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-cache"), ("Connection", "close"),
                           ("X-Content-Type-Options", "nosniff")])
        return Response(HTTPStatus.OK.value, "OK", headers, body)

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
        client = _Client(conn, ClientSession(self.limits, self.token, token, now, thumbs=thumbs),
                         wake=asyncio.Event())
        self._clients.add(client)
        peer = conn.remote_address
        sender = asyncio.create_task(self._sender(client))
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
                    log.info("client %s: %s", peer, reply.log)
                for text in reply.send:
                    await conn.send(text)
                if reply.authorised:
                    await self._go_live(client)
                if reply.close is not None:
                    log.warning("closing client %s: %s", peer, reply.close[1])
                    await conn.close(*reply.close)
                    break
                self._update_thumb_subscribers()
        except Exception as exc:  # noqa: BLE001 - a client must never take the server down
            from websockets.exceptions import ConnectionClosed
            if not isinstance(exc, ConnectionClosed):
                log.exception("client %s: unexpected error", peer)
        finally:
            sender.cancel()
            if auth_timer is not None:
                auth_timer.cancel()
            self._clients.discard(client)
            sent_close = getattr(conn.protocol, "close_sent", None)
            log.info("client %s left (close received %s, sent %s; frames sent %d, dropped %d)", peer,
                     conn.close_code, sent_close.code if sent_close is not None else None, client.sent, client.dropped)
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
            log.warning("closing client %s: no token within %.0f s", client.conn.remote_address,
                        self.limits.auth_timeout_s)
            await client.conn.close(1008, "authentication timeout")

    def _update_thumb_subscribers(self) -> None:
        self._thumb_subscribers = sum(1 for c in self._clients if c.live and c.session.thumbs)

    def _fanout(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
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
            if c.frame is not None:
                c.dropped += 1
            c.frame = text
            if thumb is not None and c.session.thumbs:
                c.thumb = thumb
            c.wake.set()

    async def _sender(self, client: _Client) -> None:
        """Per-client task: send whatever is in the mailbox; awaiting a slow socket here only
        delays this client."""
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                text, client.frame = client.frame, None
                thumb, client.thumb = client.thumb, None
                for message in (text, thumb):
                    if message is None:
                        continue
                    await asyncio.wait_for(client.conn.send(message), self.limits.send_timeout_s)
                    if message is text:
                        client.sent += 1
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning("client %s stalled for %.1f s: dropped", client.conn.remote_address,
                        self.limits.send_timeout_s)
            client.conn.transport.abort()
        except Exception:  # noqa: BLE001 - connection closed while sending: the handler cleans up
            return

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            for c in list(self._clients):
                if c.live:
                    try:
                        await asyncio.wait_for(c.conn.send(stats_message(
                            clients=len(self._clients), published=self.published, dropped=c.dropped)), 0.05)
                    except Exception:  # noqa: BLE001 - slow or closed: skip this round
                        pass
