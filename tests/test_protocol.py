"""The sans-I/O viewer protocol: schema round trip, limits, auth and rate limiting."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engines.skeleton import BONES, JOINT_NAMES
from realtime.frames import PoseFrame
from realtime.protocol import (CLOSE_POLICY, CLOSE_TOO_BIG, RECORDING_FORMAT, ClientSession, ConnectionLimiter,
                               Limits, ProtocolError, Throttle, TokenBucket, check_token, decode_json, decode_thumb,
                               encode_frame, encode_thumb, hello_message, message_to_frame, parse_recording)


def make_frame(index: int = 3, valid: bool = True) -> PoseFrame:
    rng = np.random.default_rng(index)
    if not valid:
        return PoseFrame.empty(index, 0.1 * index, (640, 480), {"detect": 12.5})
    fbi = rng.dirichlet(np.ones(3), size=14).astype(np.float32)
    return PoseFrame(index, 0.1 * index, True, rng.normal(0, 300, (17, 3)).astype(np.float32),
                     np.array([10.0, -20.0, 3500.0], np.float32), rng.uniform(0, 640, (17, 2)).astype(np.float32),
                     rng.uniform(0, 1, 17).astype(np.float32), (640, 480), fbi, {"detect": 12.5, "lift": 0.31})


def msg(type_: str, **kw) -> str:
    return json.dumps({"v": 1, "type": type_, **kw})


def test_frame_round_trip_within_wire_precision():
    f = make_frame()
    text = encode_frame(f, pub_ms=1234.5)
    obj = json.loads(text)
    assert obj["v"] == 1 and obj["type"] == "frame" and obj["index"] == 3 and obj["pub_ms"] == 1234.5
    assert np.array(obj["joints_mm"]).shape == (17, 3) and np.array(obj["fbi"]).shape == (14, 3)
    assert len(text) < 2000, len(text)
    g = message_to_frame(obj)
    np.testing.assert_allclose(g.joints_mm, f.joints_mm, atol=0.05 + 1e-3)
    np.testing.assert_allclose(g.translation_mm, f.translation_mm, atol=0.05 + 1e-3)
    np.testing.assert_allclose(g.joints_2d_px, f.joints_2d_px, atol=0.05 + 1e-3)
    np.testing.assert_allclose(g.confidence, f.confidence, atol=5e-4 + 1e-6)
    np.testing.assert_allclose(g.fbi, f.fbi, atol=5e-4 + 1e-6)
    assert g.valid and g.image_size == (640, 480) and g.timings_ms == {"detect": 12.5, "lift": 0.31}


def test_invalid_frame_and_partial_nan_encode_as_null():
    e = make_frame(valid=False)
    obj = json.loads(encode_frame(e))
    assert obj["valid"] is False and obj["joints_mm"] is None and obj["fbi"] is None
    g = message_to_frame(obj)
    assert not g.valid and np.isnan(g.joints_mm).all() and g.fbi is None
    f = make_frame()
    j = f.joints_mm.copy()
    j[5] = np.nan
    obj = json.loads(encode_frame(PoseFrame(**{**f.__dict__, "joints_mm": j})))
    assert obj["joints_mm"][5] == [None, None, None] and obj["joints_mm"][4][0] is not None
    assert np.isnan(message_to_frame(obj).joints_mm[5]).all()


@pytest.mark.parametrize("patch", [
    {"joints_mm": [[1, 2]] * 17}, {"joints_mm": [["a", 1, 2]] * 17}, {"index": "3"}, {"index": True},
    {"image_size": [1]}, {"v": 2}, {"timings_ms": {"a": "x"}}, {"fbi": [[1, 2, 3]] * 13},
])
def test_message_to_frame_rejects_bad_fields(patch):
    obj = {**json.loads(encode_frame(make_frame())), **patch}
    with pytest.raises(ProtocolError):
        message_to_frame(obj)


def test_hello_describes_the_skeleton():
    h = hello_message(auth_required=True, thumb_max_fps=3, source={"kind": "replay"})
    assert h["joint_names"] == list(JOINT_NAMES) and [tuple(b) for b in h["bones"]] == list(BONES)
    assert h["auth_required"] is True and h["thumb_max_fps"] == 3.0 and h["source"] == {"kind": "replay"}
    json.dumps(h, allow_nan=False)


@pytest.mark.parametrize("bad", ["", "nope", "[1,2]", '{"type":"ping"}', '{"v":1}', '{"v":1,"type":3}', b"\xff\xfe"])
def test_decode_json_rejects_garbage(bad):
    with pytest.raises(ProtocolError):
        decode_json(bad)


def test_thumb_framing():
    data = encode_thumb(70000, b"\xff\xd8jpeg")
    assert data[:4] == b"PSJ1" and decode_thumb(data) == (70000, b"\xff\xd8jpeg")
    with pytest.raises(ProtocolError):
        decode_thumb(b"JUNKJUNK")


def test_parse_recording():
    lines = [msg("recording", format=RECORDING_FORMAT), json.dumps(hello_message()),
             encode_frame(make_frame(1)), msg("stats", clients=1, published=2, dropped=0), encode_frame(make_frame(2)), ""]
    hello, frames = parse_recording(lines)
    assert hello is not None and [f.index for f in frames] == [1, 2]
    with pytest.raises(ProtocolError, match="line 2"):
        parse_recording([lines[0], "garbage"])
    with pytest.raises(ProtocolError, match="format"):
        parse_recording([msg("recording", format="other")])


def test_check_token():
    assert check_token(None, None) and check_token(None, "x")
    assert check_token("s3cret", "s3cret")
    assert not check_token("s3cret", "s3cres") and not check_token("s3cret", None) and not check_token("s3cret", 5)
    assert not check_token("s3cret", "x" * 1000)
    assert check_token("ключ", "ключ")


def test_token_bucket_burst_then_rate():
    b = TokenBucket(rate=10, capacity=5)
    assert sum(b.allow(0.0) for _ in range(20)) == 5       # burst
    assert not b.allow(0.05)                                # half a token
    assert b.allow(0.1)                                     # one token after 0.1 s
    assert sum(b.allow(1.1 + i * 0.001) for _ in range(1) for i in range(20)) == 5  # refilled to capacity only
    # Over a long run the admitted rate converges to `rate`.
    b = TokenBucket(rate=10, capacity=5)
    admitted = sum(b.allow(i * 0.01) for i in range(1000))  # 100 msg/s offered for 10 s
    assert 100 <= admitted <= 106, admitted


def test_connection_limiter_and_throttle():
    c = ConnectionLimiter(2)
    a, b = c.try_acquire(), c.try_acquire()
    assert a is not None and b is not None and c.try_acquire() is None and c.active == 2
    assert a.release() and not a.release() and not a.held   # exactly once, whatever calls it
    assert c.active == 1
    assert c.try_acquire() is not None and c.active == 2
    t = Throttle(5)
    admitted = sum(t.allow(i / 30) for i in range(300))  # 30 offers/s for 10 s
    assert 48 <= admitted <= 51, admitted


def test_session_without_token_answers_ping_and_subscribe():
    s = ClientSession(Limits(), token=None, query_token=None, now=0)
    assert s.authorised and s.opening() == []
    r = s.on_message(msg("ping", t=12.5), now=0.1, now_ms=99.0)
    assert json.loads(r.send[0]) == {"v": 1, "type": "pong", "t": 12.5, "server_ms": 99.0} and r.close is None
    r = s.on_message(msg("subscribe", thumbs=True), now=0.2)
    assert s.thumbs and r.send == []


def test_session_garbage_is_answered_then_closed():
    s = ClientSession(Limits(max_violations=3), token=None, query_token=None, now=0)
    for i, bad in enumerate(["garbage", b"\x00\x01", msg("launch_missiles")]):
        r = s.on_message(bad, now=i * 0.1)
        if i < 2:
            assert json.loads(r.send[0])["type"] == "error" and r.close is None and r.log
        else:
            assert r.close is not None and r.close[0] == CLOSE_POLICY


def test_session_oversized_closes_1009():
    s = ClientSession(Limits(max_inbound_bytes=100), token=None, query_token=None, now=0)
    r = s.on_message("x" * 101, now=0)
    assert r.close is not None and r.close[0] == CLOSE_TOO_BIG


def test_session_rate_limit():
    s = ClientSession(Limits(rate_per_s=5, burst=5, max_violations=10), token=None, query_token=None, now=0)
    replies = [s.on_message(msg("ping", t=1), now=0.0) for _ in range(5)]
    assert all(json.loads(r.send[0])["type"] == "pong" for r in replies)
    r = s.on_message(msg("ping", t=1), now=0.0)
    assert json.loads(r.send[0])["code"] == "rate_limited"
    r = s.on_message(msg("ping", t=1), now=0.0)           # warned once, then silently dropped
    assert r.send == [] and r.close is None
    for _ in range(8):                                     # violations 3..10: the 10th closes
        r = s.on_message(msg("ping", t=1), now=0.0)
    assert r.close is not None and r.close[0] == CLOSE_POLICY
    s2 = ClientSession(Limits(rate_per_s=5, burst=5), token=None, query_token=None, now=0)
    assert all(s2.on_message(msg("ping", t=1), now=i * 0.25).send for i in range(40))  # 4/s is fine


def test_session_token_flow():
    lim = Limits(max_auth_failures=2, auth_timeout_s=10)
    s = ClientSession(lim, token="tok", query_token=None, now=0)
    assert not s.authorised and json.loads(s.opening()[-1])["type"] == "auth_required"
    r = s.on_message(msg("ping", t=1), now=0.1)            # nothing but auth before authorisation
    assert json.loads(r.send[0])["code"] == "auth_required"
    r = s.on_message(msg("auth", token="bad"), now=0.2)
    assert json.loads(r.send[0])["code"] == "auth_failed" and not r.authorised
    r = s.on_message(msg("auth", token="tok"), now=0.3)
    assert r.authorised and json.loads(r.send[0])["type"] == "auth_ok" and s.authorised
    assert not s.auth_expired(100)
    s = ClientSession(lim, token="tok", query_token=None, now=0)
    s.on_message(msg("auth", token="bad"), now=0.1)
    r = s.on_message(msg("auth", token=["tok"]), now=0.2)
    assert r.close == (CLOSE_POLICY, "authentication failed")
    s = ClientSession(lim, token="tok", query_token=None, now=0)
    assert not s.auth_expired(9.9) and s.auth_expired(10.0)


def test_session_query_token():
    assert ClientSession(Limits(), token="tok", query_token="tok", now=0).authorised
    s = ClientSession(Limits(), token="tok", query_token="nope", now=0)
    codes = [json.loads(m).get("code", json.loads(m)["type"]) for m in s.opening()]
    assert not s.authorised and codes == ["auth_failed", "auth_required"]


def test_limits_validate():
    with pytest.raises(ValueError):
        Limits(max_clients=0)
    with pytest.raises(ValueError):
        Limits(rate_per_s=0)


def test_host_allowed_guards_loopback_servers_against_dns_rebinding():
    from realtime.protocol import host_allowed
    for ok in ["127.0.0.1:8765", "localhost:8765", "LOCALHOST", "[::1]:8765", "127.0.0.1"]:
        assert host_allowed(ok, "127.0.0.1"), ok
    for bad in ["evil.example:8765", "127.0.0.1.evil.example", None, "", "127.0.0.1:notaport", "[::1"]:
        assert not host_allowed(bad, "127.0.0.1"), bad
    assert host_allowed("myhost.lan:8765", "0.0.0.0") and host_allowed("anything", "192.168.1.5")
    assert not host_allowed("evil.example", "::1") and not host_allowed("evil.example", "localhost")


def test_origin_allowed():
    from realtime.protocol import origin_allowed
    assert origin_allowed(None, "127.0.0.1:8765")                                   # not a browser
    assert origin_allowed("http://127.0.0.1:8765", "127.0.0.1:8765")                 # our own page
    assert not origin_allowed("http://evil.example", "127.0.0.1:8765")
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8765")             # another local app
    assert not origin_allowed("null", "127.0.0.1:8765") and not origin_allowed("file://", "127.0.0.1:8765")
    assert origin_allowed("http://dash.lan:9000", "127.0.0.1:8765", ("http://dash.lan:9000",))


@pytest.mark.parametrize("text", [
    '{"v":1,"type":"ping","t":' + "9" * 4000 + "}",             # OverflowError in float() before #22
    "[" * 2000 + "]" * 2000,                                     # RecursionError before #22
    '{"v":1,"type":"ping","t":' + '{"a":' * 2000 + "1" + "}" * 2000 + "}",
    '{"v":1,"type":"ping","t":1e400}', '{"v":1,"type":"ping","t":-1e400}',
    '{"v":1,"type":"ping","t":NaN}', '{"v":1,"type":"ping","t":Infinity}',
    '{"v":1,"type":"ping","t":' + "9" * 5000 + "}",              # beyond int()'s own digit limit
])
def test_messages_under_the_size_limit_cannot_escape_the_parser(text):
    """Regression (#22): these raised OverflowError / RecursionError out of the session (the
    server logged "unexpected error" and closed 1000); now each is a bad_message violation."""
    with pytest.raises(ProtocolError) as exc:
        decode_json(text)
    assert exc.value.code == "bad_message"
    s = ClientSession(Limits(max_inbound_bytes=64 * 1024), token=None, query_token=None, now=0)
    r = s.on_message(text, now=0.0)
    assert r.close is None and json.loads(r.send[0])["code"] == "bad_message" and s.violations == 1
    assert json.loads(s.on_message(msg("ping", t=1), now=0.1).send[0])["type"] == "pong"   # still served


def test_numbers_within_bounds_still_parse():
    assert decode_json('{"v":1,"type":"ping","t":' + "9" * 18 + "}")["t"] == int("9" * 18)
    assert decode_json('{"v":1,"type":"ping","t":-1.5e300}')["t"] == -1.5e300
    obj = json.loads(encode_frame(make_frame()))
    assert message_to_frame(decode_json(json.dumps(obj))).index == 3
    with pytest.raises(ProtocolError):     # a dict built in Python, not parsed: still no OverflowError
        message_to_frame({**obj, "joints_mm": [[10 ** 400, 0, 0]] + obj["joints_mm"][1:]})


def test_recording_hello_is_checked():
    from realtime.protocol import encode_hello
    head = json.dumps({"v": 1, "type": "recording", "format": RECORDING_FORMAT})
    hello = json.loads(encode_hello(source={"kind": "webcam", "fps": 25}))
    assert parse_recording([head, json.dumps(hello)])[0]["source"]["fps"] == 25
    for bad in ({**hello, "source": "webcam"}, {**hello, "joint_names": ["a", "b"]}):
        with pytest.raises(ProtocolError, match="line 2: hello"):
            parse_recording([head, json.dumps(bad)])


def test_refused_method():
    from realtime.protocol import refused_method
    assert refused_method(b"GET / HTTP/1.1\r\n") is False and refused_method(b"HEAD /x HTTP/1.1") is False
    for m in [b"POST", b"PUT", b"DELETE", b"TRACE", b"OPTIONS", b"PATCH", b"get", b"BREW"]:
        assert refused_method(m + b" / HTTP/1.1\r\n") is True, m
    assert refused_method(b"POS") is None and refused_method(b"") is None          # not enough bytes yet
    assert refused_method(b"\x16\x03\x01\x02\x00garbage\r\n") is False               # not HTTP: left to the parser
    assert refused_method(b"GE(T / HTTP/1.1") is False and refused_method(b"A" * 40) is False


def test_address_key():
    from realtime.protocol import address_key
    assert address_key("127.0.0.1") == "127.0.0.1"
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff") == "2001:db8::/64"
    assert address_key("::ffff:10.0.0.7") == "10.0.0.7" and address_key("not-an-ip") == "not-an-ip"


def test_auth_backoff_doubles_then_caps_and_forgets():
    from realtime.protocol import AuthBackoff
    b = AuthBackoff(free=3, base_s=1.0, max_s=8.0, forget_s=60.0, max_addresses=100)
    t = 0.0
    for _ in range(3):                                      # free failures: no wait
        assert b.retry_after("a", t) == 0
        b.record("a", False, t)
    waits = []
    for _ in range(6):
        assert b.retry_after("a", t) == 0
        b.record("a", False, t)
        waits.append(b.retry_after("a", t))
        t += waits[-1]                                      # a patient guesser: once per lock
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.retry_after("b", t) == 0                       # per address
    b.record("a", True, t)                                  # a right token clears the record
    assert b.retry_after("a", t) == 0
    for _ in range(4):
        b.record("a", False, t)
    assert b.retry_after("a", t) == 1.0 and b.retry_after("a", t + 61) == 0   # forgotten after 60 s
    # Guess rate over an hour of trying as fast as allowed: bounded by the lock, not the client.
    b = AuthBackoff(free=5, base_s=1.0, max_s=60.0)
    verdicts, t = 0, 0.0
    while t < 3600:
        if b.retry_after("x", t) == 0:
            b.record("x", False, t)
            verdicts += 1
        t += 0.001                                          # 1,000 attempts/s offered
    assert verdicts <= 5 + 7 + 3600 / 60, verdicts          # free + doublings to the cap + one a minute
    # Memory is bounded whatever the number of addresses; huge counts do not overflow.
    b = AuthBackoff(free=0, base_s=1.0, max_s=60.0, max_addresses=50)
    for i in range(1000):
        b.record(f"10.0.{i // 256}.{i % 256}", False, 0.0)
    assert len(b._failures) == 50
    for _ in range(2000):
        b.record("y", False, 0.0)
    assert b.retry_after("y", 0.0) == 60.0


def test_session_token_back_off():
    from realtime.protocol import AuthBackoff
    lim = Limits(max_auth_failures=10)
    backoff = AuthBackoff(free=1, base_s=5.0, max_s=5.0)
    s = ClientSession(lim, token="tok", query_token=None, now=0, backoff=backoff, address="1.2.3.4")
    assert json.loads(s.on_message(msg("auth", token="bad"), now=0.1).send[0])["code"] == "auth_failed"
    assert json.loads(s.on_message(msg("auth", token="bad"), now=0.2).send[0])["code"] == "auth_failed"  # locks
    r = s.on_message(msg("auth", token="tok"), now=0.3)           # right, but refused unchecked
    err = json.loads(r.send[0])
    assert err["code"] == "rate_limited" and "retry in 5 s" in err["message"] and not s.authorised
    assert ClientSession(lim, token="tok", query_token="tok", now=1.0, backoff=backoff,
                         address="5.6.7.8").authorised               # another address
    q = ClientSession(lim, token="tok", query_token="tok", now=1.0, backoff=backoff, address="1.2.3.4")
    assert not q.authorised and json.loads(q.opening()[0])["code"] == "rate_limited"
    assert s.on_message(msg("auth", token="tok"), now=5.3).authorised
