"""The viewer server on loopback: static files, fan-out, late joiners, backpressure, hostile
clients, tokens and limits. Real sockets, small bounded loops."""
from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from engines.errors import UserError
from realtime.frames import PoseFrame
from realtime.protocol import Limits, decode_thumb
from realtime.server import PoseServer, resolve_static


def frame(i: int) -> PoseFrame:
    j = np.zeros((17, 3), np.float32)
    j[:, 0] = np.arange(17) * 10.0 + i
    return PoseFrame(i, i / 30, True, j, np.array([0, 0, 3000], np.float32), np.zeros((17, 2), np.float32),
                     np.ones(17, np.float32), (640, 480), None, {"total": 5.0})


@pytest.fixture
def server():
    with PoseServer(port=0, source={"kind": "test"}) as s:
        yield s


def ws_url(s: PoseServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{s.port}/ws{query}"


def recv_json(ws, timeout: float = 5.0) -> dict:
    while True:
        m = ws.recv(timeout=timeout)
        if isinstance(m, str):
            return json.loads(m)


def recv_type(ws, type_: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = recv_json(ws, max(0.01, deadline - time.monotonic()))
        if m["type"] == type_:
            return m


def drain(ws) -> None:
    """Read and drop whatever `ws` has received."""
    while True:
        try:
            ws.recv(timeout=0)
        except TimeoutError:
            return


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_static_files_and_path_safety(server):
    body = urllib.request.urlopen(server.url, timeout=5).read()
    assert b"<html" in body.lower()
    for bad in ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/.gitignore", "/node_modules/three/package.json",
                "/__init__.py", "/nope.js"]:
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{bad}", timeout=5)
        assert exc.value.code == 404, bad
    root = server.static_dir
    assert resolve_static(root, "/") == (root / "index.html").resolve()
    assert resolve_static(root, "/../realtime/server.py") is None
    # A plain GET on /ws is not an upgrade: answered (426), and its connection slot is given back.
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ws", timeout=5)
    assert exc.value.code == 426
    wait_for(lambda: server._conn_limit.active == 0)


def test_fanout_and_late_joiner(server):
    with connect(ws_url(server)) as a, connect(ws_url(server)) as b:
        for ws in (a, b):
            hello = recv_type(ws, "hello")
            assert hello["source"] == {"kind": "test"} and len(hello["joint_names"]) == 17
        server.publish(frame(1))
        for ws in (a, b):
            m = recv_type(ws, "frame")
            assert m["index"] == 1 and m["joints_mm"][3][0] == 31.0 and m["pub_ms"] > 0
        server.publish(frame(2))
        assert recv_type(a, "frame")["index"] == 2
        # A late joiner gets hello then the current frame immediately, without a new publish.
        t0 = time.monotonic()
        with connect(ws_url(server)) as c:
            assert recv_json(c)["type"] == "hello"
            m = recv_json(c)
            assert m["type"] == "frame" and m["index"] == 2
            print(f"late joiner got the current frame {1000 * (time.monotonic() - t0):.1f} ms after connecting")
    assert server.stats()["published"] == 2


def _raw_ws_handshake(port: int, query: str) -> socket.socket:
    """A client that completes the handshake and then never reads: the slowest possible viewer."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(1)
    assert resp.startswith(b"HTTP/1.1 101"), resp
    return s


def test_slow_client_blocks_neither_pipeline_nor_others():
    limits = Limits(thumb_max_fps=1000, max_thumb_bytes=512 * 1024)
    server = PoseServer(port=0, limits=limits).start()
    slow = _raw_ws_handshake(server.port, "?thumbs=1")
    try:
        with connect(ws_url(server), max_size=2**22) as fast:
            recv_type(fast, "hello")
            wait_for(lambda: sum(c["live"] for c in server.stats()["per_client"]) == 2)
            jpeg = b"\xff\xd8" + os.urandom(200 * 1024)   # 200 kB thumbnails only to the slow client
            worst = 0.0
            got = []
            for i in range(150):
                t0 = time.perf_counter()
                server.publish(frame(i), jpeg=jpeg)
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(1 / 200)
                while True:
                    try:
                        m = fast.recv(timeout=0)
                    except TimeoutError:
                        break
                    if isinstance(m, str) and json.loads(m)["type"] == "frame":
                        got.append(json.loads(m)["index"])
            deadline = time.monotonic() + 5
            while (not got or got[-1] != 149) and time.monotonic() < deadline:
                m = recv_json(fast)
                if m["type"] == "frame":
                    got.append(m["index"])
            per = server.stats()["per_client"]
            slow_stats = max(per, key=lambda c: c["dropped"])
            print(f"publish() worst {1000 * worst:.2f} ms over 150 calls; fast client got {len(got)}/150 "
                  f"frames; slow client sent {slow_stats['sent']}, dropped {slow_stats['dropped']}")
            assert got[-1] == 149                       # the fast client is up to date
            assert len(got) >= 100                      # and barely missed anything
            assert slow_stats["dropped"] > 50           # the slow one skipped frames instead
            assert worst < 0.25                         # publish never waited on a socket
        # Stopping does not hang on the stalled client either (close handshakes run concurrently).
        thread = server._thread
        t0 = time.monotonic()
        server.stop(timeout_s=15)
        print(f"stop() with a stalled client: {time.monotonic() - t0:.2f} s (its close handshake is aborted after 2 s)")
        assert not thread.is_alive()
    finally:
        server.stop()
        slow.close()


def test_garbage_binary_and_oversized_messages(server, caplog):
    caplog.set_level(logging.INFO, logger="posestream.server")
    with connect(ws_url(server)) as ws:
        recv_type(ws, "hello")
        ws.send("this is not json")
        assert recv_type(ws, "error")["code"] == "bad_message"
        ws.send(b"\x00\x01binary")
        assert recv_type(ws, "error")["code"] == "bad_message"
        ws.send(json.dumps({"v": 1, "type": "ping", "t": 5}))
        assert recv_type(ws, "pong")["t"] == 5
        ws.send("x" * (server.limits.max_inbound_bytes + 1))
        with pytest.raises(ConnectionClosed) as exc:
            for _ in range(10):
                ws.recv(timeout=5)
        assert exc.value.rcvd.code == 1009
    wait_for(lambda: any("sent 1009" in r.getMessage() for r in caplog.records))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "bad_message: invalid JSON" in logged and "binary messages are not accepted" in logged, logged
    # The server is fine afterwards.
    server.publish(frame(7))
    with connect(ws_url(server)) as ws:
        recv_type(ws, "hello")
        assert recv_type(ws, "frame")["index"] == 7


def test_flood_is_rate_limited_then_closed():
    with PoseServer(port=0, limits=Limits(rate_per_s=10, burst=10, max_violations=20)) as server:
        with connect(ws_url(server)) as ws:
            recv_type(ws, "hello")
            with pytest.raises(ConnectionClosed) as exc:
                for i in range(200):
                    ws.send(json.dumps({"v": 1, "type": "ping", "t": i}))
                for _ in range(500):
                    ws.recv(timeout=5)
            assert exc.value.rcvd.code == 1008
        with connect(ws_url(server)) as ws:
            assert recv_type(ws, "hello")


def test_token_required():
    with PoseServer(port=0, token="s3cret") as server:
        server.publish(frame(4))
        with connect(ws_url(server)) as ws:
            assert recv_json(ws)["type"] == "auth_required"
            ws.send(json.dumps({"v": 1, "type": "ping", "t": 1}))
            assert recv_type(ws, "error")["code"] == "auth_required"
            ws.send(json.dumps({"v": 1, "type": "auth", "token": "wrong"}))
            assert recv_type(ws, "error")["code"] == "auth_failed"
            ws.send(json.dumps({"v": 1, "type": "auth", "token": "s3cret"}))
            assert recv_json(ws)["type"] == "auth_ok"
            assert recv_json(ws)["type"] == "hello"
            assert recv_json(ws)["index"] == 4
        with connect(ws_url(server, "?token=s3cret")) as ws:
            assert recv_json(ws)["type"] == "hello"
        with connect(ws_url(server, "?token=nope")) as ws:
            assert recv_json(ws)["code"] == "auth_failed"
            with pytest.raises(ConnectionClosed) as exc:
                for _ in range(3):
                    ws.send(json.dumps({"v": 1, "type": "auth", "token": "still wrong"}))
                    ws.recv(timeout=5)
                    ws.recv(timeout=5)
            assert exc.value.rcvd.code == 1008
        # No frame ever reaches an unauthenticated client.
        with connect(ws_url(server)) as ws:
            assert recv_json(ws)["type"] == "auth_required"
            server.publish(frame(5))
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)


def test_auth_timeout():
    with PoseServer(port=0, token="t", limits=Limits(auth_timeout_s=0.3)) as server:
        with connect(ws_url(server)) as ws:
            assert recv_json(ws)["type"] == "auth_required"
            with pytest.raises(ConnectionClosed) as exc:
                ws.recv(timeout=5)
            assert exc.value.rcvd.code == 1008


def test_connection_limit():
    with PoseServer(port=0, limits=Limits(max_clients=2)) as server, ExitStack() as stack:
        a = stack.enter_context(connect(ws_url(server)))
        b = stack.enter_context(connect(ws_url(server)))
        with pytest.raises(InvalidStatus) as exc:
            connect(ws_url(server))
        assert exc.value.response.status_code == 503
        a.close()
        wait_for(lambda: server._conn_limit.active == 1)
        with connect(ws_url(server)) as c:
            assert recv_type(c, "hello")
        b.close()
        assert server.stats()["rejected_connections"] == 1


def test_thumbnails_are_throttled_and_opt_in():
    with PoseServer(port=0, limits=Limits(thumb_max_fps=5)) as server:
        with connect(ws_url(server, "?thumbs=1")) as t, connect(ws_url(server)) as plain:
            recv_type(t, "hello")
            recv_type(plain, "hello")
            wait_for(lambda: server.wants_thumbnail())
            thumbs, frames = [], 0
            t0 = time.monotonic()
            for i in range(30):           # 1 s at 30 fps, every frame with a JPEG
                server.publish(frame(i), jpeg=b"\xff\xd8fake-jpeg-%d" % i)
                time.sleep(1 / 30)
            elapsed = time.monotonic() - t0
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    m = t.recv(timeout=0.2)
                except TimeoutError:
                    break
                if isinstance(m, bytes):
                    thumbs.append(decode_thumb(m))
                else:
                    frames += json.loads(m)["type"] == "frame"
            print(f"{len(thumbs)} thumbnails in {elapsed:.2f} s at limit 5/s; {frames} frames")
            assert 3 <= len(thumbs) <= 5 * elapsed + 1
            assert all(j.startswith(b"\xff\xd8") for _, j in thumbs)
            # The client that did not subscribe gets no binary message.
            while True:
                try:
                    m = plain.recv(timeout=0.2)
                except TimeoutError:
                    break
                assert isinstance(m, str)
            # Subscribing later by message works too.
            plain.send(json.dumps({"v": 1, "type": "subscribe", "thumbs": True}))
            time.sleep(0.3)
            server.publish(frame(99), jpeg=b"\xff\xd8late")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                m = plain.recv(timeout=3)
                if isinstance(m, bytes):
                    assert decode_thumb(m) == (99, b"\xff\xd8late")
                    break
            else:
                raise AssertionError("no thumbnail after subscribing")


def test_port_in_use_is_a_user_error(server):
    with pytest.raises(UserError, match="cannot serve"):
        PoseServer(port=server.port).start()


def test_stop_closes_clients_and_restart_on_same_port():
    s = PoseServer(port=0).start()
    port = s.port
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        recv_type(ws, "hello")
        s.stop()
        with pytest.raises(ConnectionClosed) as exc:
            ws.recv(timeout=5)
        assert exc.value.rcvd.code == 1001
    s.publish(frame(1))      # publishing after stop is harmless
    with PoseServer(port=port) as s2:
        with connect(f"ws://127.0.0.1:{port}/ws") as ws2:
            assert recv_type(ws2, "hello")


def test_publish_to_client_latency(server):
    """publish() -> a Python websocket client's receipt on loopback, 150 frames at 30 fps (printed)."""
    lat = []
    with connect(ws_url(server)) as ws:
        recv_type(ws, "hello")
        t0 = time.monotonic()
        for i in range(150):
            server.publish(frame(i))
            m = recv_type(ws, "frame")
            lat.append(time.time() * 1000 - m["pub_ms"])
            assert m["index"] == i
            time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    print(f"publish -> client receipt over loopback: p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms "
          f"(load avg {os.getloadavg()[0]:.1f})")


def test_frame_published_before_start_is_the_current_state():
    s = PoseServer(port=0)
    s.publish(frame(42))
    with s:
        with connect(ws_url(s)) as ws:
            recv_type(ws, "hello")
            assert recv_type(ws, "frame")["index"] == 42


@pytest.mark.parametrize("payload", [b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
                                     b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n"])
def test_garbage_http_is_answered_and_server_survives(server, payload):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            reply = s.recv(200)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply
    server.publish(frame(3))
    with connect(ws_url(server)) as ws:
        recv_type(ws, "hello")
        assert recv_type(ws, "frame")["index"] == 3


def test_cross_site_and_rebinding_requests_are_refused(server):
    with pytest.raises(InvalidStatus) as exc:
        connect(ws_url(server), origin="http://evil.example")
    assert exc.value.response.status_code == 403
    with connect(ws_url(server), origin=f"http://127.0.0.1:{server.port}") as ws:   # the page's own origin
        assert recv_type(ws, "hello")
    req = urllib.request.Request(server.url, headers={"Host": f"evil.example:{server.port}"})
    with pytest.raises(urllib.error.HTTPError) as http_exc:
        urllib.request.urlopen(req, timeout=5)
    assert http_exc.value.code == 403
    assert server._conn_limit.active <= 1
    with PoseServer(port=0, allowed_origins=("http://dash.lan:9000",)) as s2:
        with connect(ws_url(s2), origin="http://dash.lan:9000") as ws:
            assert recv_type(ws, "hello")


def test_stalled_client_is_dropped_and_its_slot_freed():
    with PoseServer(port=0, limits=Limits(send_timeout_s=0.5, thumb_max_fps=1000, max_clients=1,
                                          max_thumb_bytes=512 * 1024)) as server:
        slow = _raw_ws_handshake(server.port, "?thumbs=1")
        try:
            wait_for(lambda: server.stats()["clients"] == 1)
            jpeg = b"\xff\xd8" + os.urandom(200 * 1024)
            for i in range(60):
                server.publish(frame(i), jpeg=jpeg)
                time.sleep(0.02)
            wait_for(lambda: server.stats()["clients"] == 0)
            with connect(ws_url(server)) as ws:     # max_clients=1: the slot is free again
                assert recv_type(ws, "hello")
        finally:
            slow.close()


def _upgrade_request(query: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@pytest.mark.parametrize("how", ["after-101", "before-101", "reset"])
def test_instant_close_upgrades_leak_no_slot(how):
    """Regression (#22): a client that completes the upgrade and closes at once kept its slot
    forever (websockets aborts such a connection before the handler runs), so 40 of them locked
    every later viewer out with HTTP 503. The slot is tied to the TCP connection's lifetime."""
    with PoseServer(port=0) as server:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(_upgrade_request())
            if how == "after-101":
                resp = b""
                while b"\r\n\r\n" not in resp:
                    resp += s.recv(1)
                assert resp.startswith(b"HTTP/1.1 101"), resp
            elif how == "reset":   # RST instead of FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        time.sleep(0.5)   # let the server take (and, fixed, give back) the 40 slots
        wait_for(lambda: server._conn_limit.active == 0 and server.stats()["clients"] == 0, timeout=10)
        server.publish(frame(9))
        with connect(ws_url(server), open_timeout=5) as ws:
            assert recv_type(ws, "hello")
            assert recv_type(ws, "frame")["index"] == 9
        wait_for(lambda: server._conn_limit.active == 0)
        # Only while more than 32 of the 40 were still open at once may some have been refused.
        assert server.stats()["rejected_connections"] <= 40 - server.limits.max_clients


def test_parser_escapes_are_bad_messages_not_unexpected_errors(server, caplog):
    """Regression (#22): a 4,000-digit number or JSON nested 2,000 deep (both under the size
    limit) escaped the parser: "unexpected error" with a traceback, then a close with 1000."""
    caplog.set_level(logging.INFO, logger="posestream.server")
    with connect(ws_url(server)) as ws:
        recv_type(ws, "hello")
        for text in ('{"v":1,"type":"ping","t":' + "9" * 4000 + "}", "[" * 2000 + "]" * 2000):
            assert len(text) < server.limits.max_inbound_bytes
            ws.send(text)
            assert recv_type(ws, "error")["code"] == "bad_message"
        ws.send(json.dumps({"v": 1, "type": "ping", "t": 5}))
        assert recv_type(ws, "pong")["t"] == 5            # the connection stays open
    assert not any(r.exc_info or "unexpected" in r.getMessage() for r in caplog.records)


def http_raw(port: int, request: bytes, shutdown: bool = False) -> bytes:
    """Send `request` on a fresh connection and read the whole answer (the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return reply
            reply += chunk


def no_tracebacks(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("length", [1000, 1100, 4000, 8000])
def test_long_url_paths_are_answered_without_traceback(server, caplog, length):
    """Regression (#22): a path of 1,000+ characters gave HTTP 500 and a 9 kB traceback
    (ENAMETOOLONG from is_file())."""
    caplog.set_level(logging.DEBUG, logger="posestream.server")
    for path in ["/" + "a" * length, "/" + "b" * (length // 2) + "/" + "c" * (length // 2) + ".js",
                 "/ws" + "x" * length]:
        reply = http_raw(server.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status = int(reply.split(b" ", 2)[1])
        assert status == (414 if len(path) > server.limits.max_path_chars else 404), (length, reply[:100])
    no_tracebacks(caplog)
    assert resolve_static(server.static_dir, "/" + "n" * 300) is None     # one name over NAME_MAX
    with connect(ws_url(server)) as ws:
        assert recv_type(ws, "hello")


@pytest.mark.parametrize("headers,path,status", [
    ("Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n", "/", 400),
    ("Host: 127.0.0.1\r\nHost: evil.example\r\n", "/", 400),
    ("Host: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: http://evil.example\r\n", "/ws", 403),
])
def test_duplicate_host_or_origin_is_refused_cleanly(server, caplog, headers, path, status):
    """Regression (#22): a duplicate Host or Origin header raised MultipleValuesError: HTTP 500
    and a traceback (closed, but noisily)."""
    caplog.set_level(logging.DEBUG)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n") if path == "/ws" else ""
    reply = http_raw(server.port, f"GET {path} HTTP/1.1\r\n{headers}{upgrade}\r\n".encode())
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    no_tracebacks(caplog)
    assert server._conn_limit.active == 0


def _status_and_headers(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def test_http_methods(server, caplog):
    """Regression (#22): HEAD returned the body, DELETE/TRACE/OPTIONS got 200 and the file, and
    POST/PUT with a body were closed unanswered. Now: 405 with Allow: GET, HEAD; HEAD has no body."""
    caplog.set_level(logging.DEBUG)
    status, headers, body = _status_and_headers(http_raw(server.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
    assert status == 200 and len(body) == int(headers["content-length"]) > 100
    status, head_headers, head_body = _status_and_headers(
        http_raw(server.port, b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
    assert status == 200 and head_body == b"" and head_headers["content-length"] == headers["content-length"]
    for method in ["DELETE", "TRACE", "OPTIONS", "PATCH", "CONNECT", "PROPFIND", "get"]:
        for path in ["/", "/index.html", "/ws"]:
            status, headers, body = _status_and_headers(
                http_raw(server.port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()))
            assert status == 405 and headers["allow"] == "GET, HEAD" and b"<html" not in body, (method, path)
    for method in ["POST", "PUT"]:
        for size in [10, 100_000, 3 * 1024 * 1024]:     # the last one is more than the server reads
            request = (f"{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n").encode() + b"x" * size
            try:
                reply = http_raw(server.port, request, shutdown=True)
            except OSError:                     # reset, or not connected any more when shutting down
                assert size > 1024 * 1024      # cut after MAX_DISCARD_BYTES: the answer may be lost
                continue
            status, headers, _ = _status_and_headers(reply)
            assert status == 405 and headers["allow"] == "GET, HEAD", (method, size)
    status, headers, _ = _status_and_headers(http_raw(server.port, b"HEAD /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
    assert status == 405 and headers["allow"] == "GET"
    no_tracebacks(caplog)
    assert server._conn_limit.active == 0
    with connect(ws_url(server)) as ws:
        assert recv_type(ws, "hello")


def test_dropped_counts_every_frame_a_client_missed():
    """Regression (#22): frames overwritten in the server-wide mailbox (published faster than
    the loop fans out) were not counted: a steady client missed 9.1 % of the frames while
    stats said 40. Now published - received == dropped, and received == the server's sent."""
    with PoseServer(port=0) as server:
        with connect(ws_url(server), max_size=2**22) as ws:
            recv_type(ws, "hello")
            wait_for(lambda: any(c["live"] for c in server.stats()["per_client"]))
            n = 3000
            for i in range(n):             # as fast as possible: many overwrites in both mailboxes
                server.publish(frame(i))
                if i % 500 == 0:
                    time.sleep(0.01)
            received, last_stats = 0, None
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                m = recv_json(ws)
                if m["type"] == "frame":
                    received += 1
                elif m["type"] == "stats" and m["published"] == n and m["sent"] == received:
                    last_stats = m
                    break
            assert last_stats is not None, "no final stats message"
            server_view = server.stats()["per_client"][0]
            print(f"published {n}, received {received}, dropped (stats) {last_stats['dropped']}")
            assert received < n                                    # the test did make it miss frames
            assert last_stats["published"] - received == last_stats["dropped"] == server_view["dropped"]
            assert last_stats["sent"] == received == server_view["sent"]


def test_token_options_and_environment(tmp_path, caplog, monkeypatch):
    """#22: the token can come from $POSESTREAM_TOKEN or --token-file (a command line is
    readable in /proc/PID/cmdline); an empty variable counts as unset, with a warning."""
    import argparse

    from realtime.server import add_token_arguments, token_from_args

    parser = argparse.ArgumentParser()
    add_token_arguments(parser)
    assert "/proc/PID/cmdline" in parser.format_help() and "--token-file" in parser.format_help()
    args = parser.parse_args([])
    assert token_from_args(args, {}) is None
    assert token_from_args(args, {"POSESTREAM_TOKEN": "envtok"}) == "envtok"
    caplog.set_level(logging.WARNING, logger="posestream.server")
    assert token_from_args(args, {"POSESTREAM_TOKEN": ""}) is None
    assert "POSESTREAM_TOKEN is set but empty" in caplog.text
    (tmp_path / "tok").write_text("filetok\n")
    assert token_from_args(parser.parse_args(["--token-file", str(tmp_path / "tok")]),
                           {"POSESTREAM_TOKEN": "envtok"}) == "filetok"
    assert token_from_args(parser.parse_args(["--token", "cli"]), {"POSESTREAM_TOKEN": "envtok"}) == "cli"
    (tmp_path / "empty").write_text("\n")
    for argv, match in [(["--token-file", str(tmp_path / "empty")], "is empty"),
                        (["--token-file", str(tmp_path / "missing")], "cannot read"),
                        (["--token", ""], "must not be empty"),
                        (["--token", "a", "--token-file", str(tmp_path / "tok")], "not both")]:
        with pytest.raises(UserError, match=match):
            token_from_args(parser.parse_args(argv), {})
    # `serve` with an empty POSESTREAM_TOKEN= starts (it used to stop on "--token must not be empty").
    from realtime.cli import main
    from tests.test_serve_cmd import write_npz
    write_npz(tmp_path / "clip.npz", 5)
    monkeypatch.setenv("POSESTREAM_TOKEN", "")
    assert main(["serve", str(tmp_path / "clip.npz"), "--port", "0", "--duration", "0.2"]) == 0


def test_live_serve_on_a_network_without_token_warns(caplog, monkeypatch):
    """Regression (#22): `video`/`webcam --serve --host 0.0.0.0` gave no warning (only `serve`
    did); the warning is now the server's, so every command gets it. It comes once the server
    listens: a host that cannot be bound (192.0.2.1, TEST-NET, is not this machine's) gets its
    error alone, not first a warning about a server that never ran."""
    import argparse

    from realtime.cli_options import add_output_arguments
    from realtime.sinks import LiveSinks

    parser = argparse.ArgumentParser()
    add_output_arguments(parser)
    caplog.set_level(logging.WARNING, logger="posestream.server")
    monkeypatch.delenv("POSESTREAM_TOKEN", raising=False)
    with pytest.raises(UserError, match="cannot serve"):
        LiveSinks.from_args(parser.parse_args(["--serve", "--host", "192.0.2.1", "--port", "0"]), 30.0)
    assert "without a token" not in caplog.text
    sinks = LiveSinks.from_args(parser.parse_args(["--serve", "--host", "0.0.0.0", "--port", "0"]), 30.0)
    sinks.close()
    assert "serving on 0.0.0.0 without a token" in caplog.text
    caplog.clear()
    monkeypatch.setenv("POSESTREAM_TOKEN", "s3cret")
    sinks = LiveSinks.from_args(parser.parse_args(["--serve", "--host", "0.0.0.0", "--port", "0"]), 30.0)
    sinks.close()
    assert "without a token" not in caplog.text


def test_empty_host_is_a_usage_error_and_an_ipv6_url_is_bracketed(capsys):
    from realtime.cli import main

    assert main(["serve", "x.npz", "--host", ""]) == 2
    assert main(["webcam", "--serve", "--host", " "]) == 2
    err = capsys.readouterr().err
    assert "argument --host: must be a host name or address" in err and "http://:" not in err
    server = PoseServer(host="::1", port=8765)
    server.port = 8765
    assert server.url == "http://[::1]:8765/"


def test_wrong_tokens_back_off_per_address():
    """#22: 1,072 wrong-token guesses/s from one process. Now, past `auth_backoff_free` wrong
    tokens, an address is locked (doubling) and its tokens are refused unchecked, even a right
    one; other addresses are not affected."""
    limits = Limits(auth_backoff_free=2, auth_backoff_base_s=0.5, auth_backoff_max_s=2.0)
    with PoseServer(port=0, token="s3cret", limits=limits) as server:
        def first_code(token: str, source: str) -> str:
            with connect(ws_url(server, f"?token={token}"), source_address=(source, 0)) as ws:
                m = recv_json(ws)
                return m.get("code", m["type"])

        assert [first_code("wrong", "127.0.0.2") for _ in range(3)] == ["auth_failed"] * 3   # the 3rd locks
        assert first_code("s3cret", "127.0.0.2") == "rate_limited"      # locked: not even checked
        assert first_code("s3cret", "127.0.0.1") == "hello"             # another address is not slowed
        time.sleep(0.6)
        assert first_code("s3cret", "127.0.0.2") == "hello"             # lock over: the right token works
        # ... and a success cleared the record: wrong tokens are free again.
        assert [first_code("wrong", "127.0.0.2") for _ in range(2)] == ["auth_failed"] * 2
        # The same through auth messages on one connection.
        with connect(ws_url(server), source_address=("127.0.0.3", 0)) as ws:
            assert recv_json(ws)["type"] == "auth_required"
            codes = []
            for _ in range(2):
                ws.send(json.dumps({"v": 1, "type": "auth", "token": "wrong"}))
                codes.append(recv_json(ws)["code"])
            ws.send(json.dumps({"v": 1, "type": "auth", "token": "wrong"}))     # 3rd failure: closed 1008
            with pytest.raises(ConnectionClosed):
                recv_json(ws)
        assert codes == ["auth_failed", "auth_failed"]
        with connect(ws_url(server, "?token=s3cret"), source_address=("127.0.0.3", 0)) as ws:
            assert recv_json(ws)["code"] == "rate_limited"


def test_repeated_refusals_are_rate_limited_in_the_log(caplog):
    """Regression (#22): every 503 logged a WARNING (3.2 MB of log in two 30 s churn runs). Now
    5 lines per 30 s window, the others counted in "N similar messages suppressed" notes and
    summaries: every refusal is accounted for, in a handful of lines."""
    import re

    caplog.set_level(logging.INFO, logger="posestream.server")
    t0 = time.monotonic()
    with PoseServer(port=0, limits=Limits(max_clients=1)) as server:
        with connect(ws_url(server)) as held:
            recv_type(held, "hello")
            for _ in range(300):
                with pytest.raises(InvalidStatus):
                    connect(ws_url(server), open_timeout=5)
                drain(held)      # read its stats: a full queue would stop it answering the server's pings
        assert server.stats()["rejected_connections"] == 300
    windows = int((time.monotonic() - t0) // 30) + 1
    messages = [r.getMessage() for r in caplog.records]
    lines = [m for m in messages if m.startswith("request refused (503)")]
    noted = sum(int(n) for m in lines for n in re.findall(r"\((\d+) similar messages suppressed", m))
    summaries = [m for m in messages if re.match(r"\d+ similar messages suppressed in .*request refused \(503\)", m)]
    summarised = sum(int(m.split(" ", 1)[0]) for m in summaries)
    print(f"300 refusals in {windows} window(s): {len(lines)} lines, {len(summaries)} summaries")
    assert len(lines) + noted + summarised == 300, (len(lines), noted, summarised)
    assert len(lines) <= 5 * windows and len(summaries) <= windows
    assert summaries and summaries[-1].endswith("1 viewers already (limit)")     # the last one, flushed at stop


def test_clients_giving_up_mid_handshake_leak_no_slot():
    """Regression (#22): 50 normal clients with a 20 ms open timeout locked every later viewer
    out (HTTP 503, still after 65 s with 0 clients connected)."""
    with PoseServer(port=0) as server:
        outcomes: dict[str, int] = {}
        for i in range(50):   # 20 ms was enough under load; here: down to 0.5 ms, so that some give up
            try:
                with connect(ws_url(server), open_timeout=(0.0005, 0.001, 0.002, 0.02)[i % 4]):
                    key = "connected"
            except (TimeoutError, OSError, InvalidStatus, ConnectionClosed) as exc:
                key = type(exc).__name__
            outcomes[key] = outcomes.get(key, 0) + 1
        print(f"50 clients with a 0.5-20 ms open timeout: {outcomes}")
        wait_for(lambda: server._conn_limit.active == 0 and server.stats()["clients"] == 0, timeout=15)
        with connect(ws_url(server), open_timeout=5) as ws:
            assert recv_type(ws, "hello")
