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
