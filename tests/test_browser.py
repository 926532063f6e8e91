"""The browser viewer in headless Chromium (Playwright, SwiftShader WebGL) against the real
server on loopback: joint positions in the three.js scene, screenshot, reconnect after the
server is killed, token prompt, Record -> replay, and the render fps / latency targets.

Skips only when Debian's chromium (/usr/bin/chromium) or the playwright package is absent.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from realtime.frames import PoseFrame
from realtime.server import PoseServer
from tests.video_serve import VideoServe, needs_shipped_model
from tests.viewer_clip import synthetic_clip

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).is_file():
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")


@pytest.fixture(scope="module")
def browser():
    if not (REPO / "web_viewer" / "vendor" / "three" / "three.module.js").is_file():
        pytest.fail("three.js is not vendored: run `npm ci --prefix web_viewer` first")
    with tempfile.TemporaryDirectory(prefix="posestream-chromium-") as profile, sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                                   viewport={"width": 960, "height": 600}, accept_downloads=True)
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.close()
    assert not errors, errors


def expected_world(f: PoseFrame) -> np.ndarray:
    """The documented placement: root = translation_mm, joint = root + (joint - pelvis), then
    camera (x right, y down, z forward, mm) -> world (x, -y, -z) metres."""
    cam = f.translation_mm[None, :] + f.joints_mm - f.joints_mm[0]
    return cam * np.array([1.0, -1.0, -1.0]) / 1000.0


def wait_index(page, index: int, timeout_ms: int = 10000) -> None:
    page.wait_for_function(f"window.posestream && window.posestream.lastFrameIndex === {index}", timeout=timeout_ms)
    page.wait_for_function("window.posestream.stats().framesDrawn > 0", timeout=timeout_ms)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_jpeg(f: PoseFrame) -> bytes:
    import cv2
    img = np.full((480, 640, 3), 70, np.uint8)
    cv2.putText(img, f"frame {f.index}", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    for a, b in [(0, 7), (7, 8), (8, 10), (8, 11), (11, 13), (8, 14), (14, 16), (0, 3), (0, 6)]:
        pa, pb = f.joints_2d_px[a], f.joints_2d_px[b]
        if np.isfinite(pa).all() and np.isfinite(pb).all():
            cv2.line(img, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), (0, 255, 0), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return buf.tobytes()


def test_scene_matches_stream_and_screenshot(page, tmp_path):
    """...and the screenshot goes to tmp_path (tests never write tracked files); to refresh
    docs/viewer.png: POSESTREAM_SCREENSHOT_DIR=docs pytest tests/test_browser.py -k screenshot"""
    import cv2

    clip = synthetic_clip(40)
    with PoseServer(port=0) as server:
        page.goto(server.url)
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        page.click("#btn-pip")
        page.wait_for_function("window.posestream.conn.thumbs === true")
        time.sleep(0.3)
        for f in clip[:21]:
            server.publish(f, jpeg=make_jpeg(f))
            time.sleep(1 / 30)
        f = clip[20]
        wait_index(page, 20)
        got = page.evaluate("window.posestream.jointPositions()")
        np.testing.assert_allclose(np.array(got), expected_world(f), atol=2e-4)
        bones = np.array(page.evaluate("window.posestream.bonePositions()"))
        world = expected_world(f)
        from engines.skeleton import BONES
        np.testing.assert_allclose(bones[:, 0], world[[p for p, _ in BONES]], atol=2e-4)
        np.testing.assert_allclose(bones[:, 1], world[[c for _, c in BONES]], atol=2e-4)
        # The HUD shows the frame; the 2D picture-in-picture got the thumbnail.
        page.wait_for_function("document.getElementById('hud-index').textContent === '20'")
        page.wait_for_function("window.posestream.thumbIndex >= 15", timeout=10000)
        pip = page.evaluate("""(() => { const c = document.getElementById('pip');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let lit = 0; for (let i = 0; i < d.length; i += 4) lit += d[i] + d[i + 1] + d[i + 2] > 60; return lit; })()""")
        assert pip > 1000, pip
        png = page.screenshot()
        shots = Path(os.environ.get("POSESTREAM_SCREENSHOT_DIR") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        (shots / "viewer.png").write_bytes(png)
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        b, g, r = (img[..., k].astype(int) for k in range(3))
        # Track 0's colours: centre #3b82f6, left limbs lighter, right limbs darker.
        light = int(((b > 220) & (r > 120) & (r < 190) & (g > 160)).sum())
        dark = int(((b > 110) & (b < 190) & (r < 70) & (g > 50) & (g < 110)).sum())
        print(f"screenshot {img.shape[1]}x{img.shape[0]}: std {img.std():.1f}, left (light blue) px {light}, "
              f"right (dark blue) px {dark}")
        assert img.std() > 10 and light > 300 and dark > 300
        # A "no person" frame hides the skeleton.
        invalid = next(x for x in clip if not x.valid)
        server.publish(invalid)
        wait_index(page, invalid.index)
        assert page.evaluate("window.posestream.jointPositions()") is None
        page.wait_for_function("document.getElementById('hud-person').textContent.includes('no person')")


def _serve(path: Path, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "serve", str(path), "--port", str(port), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving"), line + proc.stdout.read() if proc.poll() is not None else line
    return proc


def test_reconnects_after_server_is_killed(page, tmp_path):
    from realtime.writers import NpzWriter

    clip_path = tmp_path / "clip.npz"
    w = NpzWriter(clip_path, fps=30)
    for f in synthetic_clip(60):
        w.write(f)
    w.close()
    port = free_port()
    proc = _serve(clip_path, port, "--loop", "--duration", "60")
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        page.wait_for_function("window.posestream.lastFrameIndex !== null", timeout=10000)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        page.wait_for_function("window.posestream.state === 'reconnecting'", timeout=10000)
        t_kill = time.monotonic()
        time.sleep(1.0)
        proc = _serve(clip_path, port, "--loop", "--duration", "60")
        page.wait_for_function("window.posestream.state === 'live' && window.posestream.connects === 2", timeout=20000)
        t_back = time.monotonic()
        first = page.evaluate("window.posestream.stats().framesReceived")
        page.wait_for_function(f"window.posestream.stats().framesReceived > {first + 5}", timeout=10000)
        print(f"viewer live again {t_back - t_kill:.2f} s after the kill (server down for ~1 s)")
    finally:
        proc.kill()
        proc.wait(10)


@needs_shipped_model
def test_scene_matches_video_serve(page, tmp_path):
    """`posestream video --serve --hold`: the page it serves draws the last frame of the file
    (the skeleton placed as documented), and the output file holds every frame."""
    from engines.skeleton import BONES
    from realtime.protocol import message_to_frame
    from realtime.writers import read_pose_npz

    out = tmp_path / "demo.npz"
    with VideoServe(out, "--max-frames", "12", "--hold") as run:
        run.wait_for("end of file: serving the last frame at")
        page.goto(run.url)
        wait_index(page, 11)
        streamed = message_to_frame(page.evaluate("window.posestream.lastFrame"))
        poses = read_pose_npz(out)
        assert [p.index for p in poses] == list(range(12)) and poses[11].valid and streamed.valid
        np.testing.assert_allclose(streamed.joints_mm, poses[11].joints_mm, atol=0.051)  # the file's frame
        world = expected_world(streamed)
        np.testing.assert_allclose(np.array(page.evaluate("window.posestream.jointPositions()")), world, atol=2e-4)
        bones = np.array(page.evaluate("window.posestream.bonePositions()"))
        np.testing.assert_allclose(bones[:, 0], world[[p for p, _ in BONES]], atol=2e-4)
        np.testing.assert_allclose(bones[:, 1], world[[c for _, c in BONES]], atol=2e-4)
        page.wait_for_function("document.getElementById('hud-index').textContent === '11'")
        assert run.interrupt() == 0, run.output


def test_token_prompt(page):
    clip = synthetic_clip(5)
    with PoseServer(port=0, token="open-sesame") as server:
        server.publish(clip[3])
        page.goto(server.url)
        page.wait_for_selector("#auth:not([hidden])", timeout=15000)
        assert page.evaluate("window.posestream.lastFrameIndex") is None
        page.fill("#auth-token", "wrong")
        page.click("#auth button[type=submit]")
        page.wait_for_function("document.getElementById('auth-msg').textContent.includes('Wrong token')")
        page.fill("#auth-token", "open-sesame")
        page.click("#auth button[type=submit]")
        wait_index(page, 3)
        assert page.is_hidden("#auth")


def test_record_then_replay(page, tmp_path):
    from realtime.protocol import parse_recording
    from realtime.serve_cmd import load_frames

    clip = synthetic_clip(30)
    with PoseServer(port=0, source={"kind": "test", "fps": 30}) as server:
        page.goto(server.url)
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        page.click("#btn-record")
        for f in clip:
            server.publish(f)
            time.sleep(1 / 30)
        wait_index(page, 29)
        with page.expect_download() as dl:
            page.click("#btn-record")
        path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(path)
    assert path.suffix == ".jsonl"
    with open(path) as fh:
        hello, got = parse_recording(fh)
    assert hello is not None and hello["source"] == {"kind": "test", "fps": 30}
    assert len(got) >= 20 and got[-1].index == 29
    by_index = {f.index: f for f in clip}
    for g in got:
        np.testing.assert_allclose(np.nan_to_num(g.joints_mm), np.nan_to_num(by_index[g.index].joints_mm), atol=0.051)
    frames, fps = load_frames(path)
    assert len(frames) == len(got) and fps == 30


def test_render_fps_and_latency_targets(page):
    """30 fps stream for 6 s: render fps (target >= 55) and browser latency p95 (message receipt
    -> frame drawn, target <= 20 ms), measured in the page."""
    clip = synthetic_clip(210)
    with PoseServer(port=0) as server:
        page.goto(server.url)
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        t0 = time.monotonic()
        for i, f in enumerate(clip):
            if i == 30:   # 1 s warm-up
                page.evaluate("window.posestream.resetStats()")
            server.publish(f)
            time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
        s = page.evaluate("window.posestream.stats()")
    elapsed_s = (s["now"] - s["since"]) / 1000
    fps = s["rendersTotal"] / elapsed_s
    lat = s["browserLatencyMs"]
    load1 = os.getloadavg()[0]
    print(f"\nheadless Chromium + SwiftShader, 960x600, antialias {page.evaluate('window.posestream.antialias')}, "
          f"load avg {load1:.1f} on {os.cpu_count()} cores:\n"
          f"  render {fps:.1f} fps over {elapsed_s:.1f} s (target >= 55); stream {s['framesReceived'] / elapsed_s:.1f} fps "
          f"received, {s['framesDrawn']} drawn, {s['superseded']} superseded, {s['dropped']} index gaps\n"
          f"  browser latency receipt->drawn p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms (target <= 20); "
          f"receipt->next animation frame p95 {s['nextFrameLatencyMs']['p95']:.1f} ms; "
          f"render() p95 {s['renderMs']['p95']:.1f} ms\n"
          f"  end-to-end estimate p50 {s['totalLatencyMs']['p50']:.1f} ms, p95 {s['totalLatencyMs']['p95']:.1f} ms "
          f"(pipeline 10 ms + transit p95 {s['transitMs']['p95']:.1f} ms + browser)")
    assert s["framesReceived"] > 100
    missed = []
    if fps < 55:
        missed.append(f"render {fps:.1f} fps < 55")
    if lat["p95"] > 20:
        missed.append(f"latency p95 {lat['p95']:.1f} ms > 20")
    if missed and load1 > 1.5 * (os.cpu_count() or 1):
        pytest.xfail(f"targets missed on an overloaded machine (load {load1:.1f}): {', '.join(missed)}")
    assert not missed, missed


def test_root_placement_rules(page):
    """toWorld: translation when known, else the pelvis of absolute joints, else 3 m ahead."""
    with PoseServer(port=0) as server:
        page.goto(server.url)
        page.wait_for_function("window.posestream && window.posestream.state === 'live'", timeout=15000)
        joints = [[10.0 * i, 20.0 * i, 5.0 * i] for i in range(17)]           # root-relative (pelvis at 0)
        absolute = [[x + 100, y + 200, z + 2000] for x, y, z in joints]

        def world(msg):
            return np.array(page.evaluate("(m) => window.posestream.toWorld(m)", msg))

        base = {"valid": True, "joints_mm": joints, "translation_mm": [1, 2, 3000]}
        np.testing.assert_allclose(world(base)[5], [(1 + 50) / 1000, -(2 + 100) / 1000, -(3000 + 25) / 1000])
        np.testing.assert_allclose(world({**base, "joints_mm": absolute, "translation_mm": None})[5],
                                   [0.15, -0.3, -2.025])
        np.testing.assert_allclose(world({**base, "translation_mm": [None, None, None]})[5], [0.05, -0.1, -3.025])
        holes = page.evaluate("(m) => window.posestream.toWorld(m)",
                              {**base, "joints_mm": [None if i == 4 else j for i, j in enumerate(joints)]})
        assert holes[4] is None and holes[5] is not None
        assert page.evaluate("(m) => window.posestream.toWorld(m)", {**base, "valid": False}) is None
