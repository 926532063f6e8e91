"""The --open3d window, rendered headless (Mesa EGL offscreen, or Xvfb if DISPLAY is set)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.frames import PoseFrame

from pose_fixtures import standing_pose

W, H = 320, 240


@pytest.fixture
def sink():
    from realtime.open3d_sink import Open3DSink, Open3DUnavailable

    try:
        s = Open3DSink(W, H, visible=False)
    except Open3DUnavailable as exc:
        pytest.skip(f"Open3D cannot render here: {exc}")
    yield s
    s.close()


def _frame(i: int, trans: np.ndarray | None) -> PoseFrame:
    rel = standing_pose()
    tr = np.full(3, np.nan) if trans is None else trans
    return PoseFrame(i, i / 30.0, True, rel.astype(np.float32), np.asarray(tr, np.float32),
                     np.zeros((17, 2), np.float32), np.ones(17, np.float32), (640, 480))


def _ink(img: np.ndarray) -> dict[str, float]:
    """Fractions of non-white, blue-ish (left limbs) and red-ish (right limbs) pixels."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return {"any": float((img.min(axis=-1) < 0.9).mean()),
            "blue": float(((b > 0.7) & (r < 0.4)).mean()),
            "red": float(((r > 0.7) & (b < 0.4) & (g < 0.4)).mean())}


def test_skeleton_is_drawn_root_relative_and_in_camera_space(sink):
    assert sink.update(_frame(0, None))
    img = sink.capture()
    assert img.shape == (H, W, 3)
    ink = _ink(img)
    assert ink["any"] > 0.005 and ink["blue"] > 0.0005 and ink["red"] > 0.0005, ink
    # The person walks away from the camera: the skeleton gets smaller but stays drawn.
    t0 = time.perf_counter()
    for i in range(30):
        assert sink.update(_frame(i + 1, np.array([-400.0 + 25 * i, 0.0, 2500.0 + 60 * i])))
    per_update_ms = (time.perf_counter() - t0) * 1e3 / 30
    ink2 = _ink(sink.capture())
    assert ink2["blue"] > 0.0002 and ink2["red"] > 0.0002, ink2
    print(f"open3d update: {per_update_ms:.1f} ms/frame at {W}x{H}")


def test_invalid_frame_clears_skeleton(sink):
    sink.update(_frame(0, None))
    before = _ink(sink.capture())
    sink.update(PoseFrame.empty(1, 1 / 30.0, (640, 480)))
    after = _ink(sink.capture())  # only the camera's small axis triad is left
    assert after["any"] < 0.5 * before["any"] and after["blue"] < 0.5 * before["blue"], (before, after)


def test_poll_keeps_the_last_frame(sink):
    sink.update(_frame(0, None))
    before = _ink(sink.capture())
    assert sink.poll() and sink.poll()  # --hold: events handled, nothing new drawn
    assert _ink(sink.capture()) == pytest.approx(before, rel=0.05, abs=1e-4)


def test_close_is_idempotent(sink):
    sink.close()
    sink.close()
    assert sink.update(_frame(0, None)) is False and sink.poll() is False


def test_visible_window_without_display_is_a_clear_error(monkeypatch):
    import sys

    from realtime.open3d_sink import Open3DSink, Open3DUnavailable

    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY check is Linux-only")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(Open3DUnavailable, match="needs a display"):
        Open3DSink(visible=True)
