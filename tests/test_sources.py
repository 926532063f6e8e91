"""realtime.sources: frames, timestamps and every error path (missing, not a video,
truncated, corrupt frame, unreadable image, missing webcam)."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.errors import UserError
from realtime.sources import ImageFolderSource, VideoFileSource, WebcamSource, open_source

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"


def _write_video(path: Path, n: int = 20, fourcc: str = "MJPG", size: tuple[int, int] = (64, 48)) -> Path:
    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    for _ in range(n):
        w.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    w.release()
    return path


def test_demo_video_frames_and_timestamps():
    with VideoFileSource(DEMO, max_frames=5) as src:
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert src.fps == pytest.approx(30.0) and src.size == (640, 360)
    np.testing.assert_allclose([f.timestamp_s for f in frames], np.arange(5) / 30.0)
    f = frames[0]
    assert f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
    # RGB, not BGR: compare with OpenCV's own first frame
    bgr = cv2.VideoCapture(str(DEMO)).read()[1]
    np.testing.assert_array_equal(f.image, bgr[:, :, ::-1])


def test_missing_and_non_video_files(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        VideoFileSource(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(UserError, match="cannot decode"):
        VideoFileSource(junk)


def test_truncated_mp4_is_a_user_error(tmp_path: Path):
    full = _write_video(tmp_path / "v.mp4", fourcc="mp4v").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])  # mp4v from OpenCV: index at the end is lost
    with pytest.raises(UserError):
        VideoFileSource(cut)


def test_truncated_avi_accounts_for_lost_frames(tmp_path: Path, caplog):
    full = _write_video(tmp_path / "v.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full[: len(full) * 6 // 10])
    with caplog.at_level(logging.WARNING), VideoFileSource(cut) as src:
        frames = list(src)
    assert 0 < len(frames) < 20
    assert sorted([f.index for f in frames] + src.skipped) == list(range(20))
    assert "truncated" in caplog.text


def test_corrupt_frame_is_skipped_and_keeps_its_index(tmp_path: Path, caplog):
    data = bytearray(_write_video(tmp_path / "v.avi").read_bytes())
    soi = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(soi) == 20
    data[soi[10]:soi[10] + 2000] = bytes(2000)  # wipe frame 10's JPEG header and data
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), VideoFileSource(bad) as src:
        idx = [f.index for f in src]
    assert src.skipped == [10]
    assert idx == [i for i in range(20) if i != 10]
    assert "frame 10" in caplog.text


def test_image_folder(tmp_path: Path, caplog):
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    (tmp_path / "img1b.jpg").write_bytes(b"not a jpeg")  # sorts between img1 and img2
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING), ImageFolderSource(tmp_path, fps=10) as src:
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 3] and src.skipped == [2]
    assert frames[2].timestamp_s == pytest.approx(0.3)
    assert frames[0].image.shape == (30, 40, 3)
    assert "unreadable" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        ImageFolderSource(empty)
    with pytest.raises(UserError, match="not found"):
        ImageFolderSource(tmp_path / "missing")


def test_missing_webcam_is_a_user_error(capfd):
    import cv2

    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(UserError, match="webcam"):
        WebcamSource(97)
    with pytest.raises(UserError, match="webcam"):
        open_source("/dev/video97")
    # OpenCV's own log line about the missing camera is silenced (the error says it once),
    # and its log level is restored afterwards
    assert "out of range" not in capfd.readouterr().err
    assert cv2.utils.logging.getLogLevel() == level


def test_open_source_dispatch(tmp_path: Path):
    assert isinstance(open_source(str(DEMO), max_frames=1), VideoFileSource)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert isinstance(open_source(str(tmp_path)), ImageFolderSource)
    with pytest.raises(UserError):
        open_source(str(tmp_path / "missing.mp4"))
