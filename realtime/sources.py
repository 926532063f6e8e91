"""Frame sources: video file, webcam (OpenCV index or device path), image folder.

Each source is an iterable of `Frame`s (RGB uint8, 0-based index, timestamp in seconds) with
`fps`, `skipped` (indices of frames that could not be decoded) and `close()`; use them as
context managers. A frame that cannot be decoded is logged and skipped, but it keeps its
index (the next frame's index jumps past it), so consumers can account for it, e.g. write
an empty pose for it. Unusable input (missing file, not a video, no webcam) raises
`UserError` with one clear line.

Timestamps: presentation time index / fps for files and folders (deterministic; OpenCV's
CAP_PROP_POS_MSEC is unreliable for some containers), time.monotonic() since opening for
webcams.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Self

import numpy as np

from engines.errors import UserError
from realtime.frames import Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FPS = 30.0
# A run of this many undecodable frames in a row ends a file (the rest is unreadable).
MAX_CONSECUTIVE_FAILURES = 30


def _valid_image(bgr: object, expected_hw: tuple[int, int] | None) -> bool:
    return (isinstance(bgr, np.ndarray) and bgr.ndim == 3 and bgr.shape[2] == 3 and bgr.dtype == np.uint8
            and bgr.shape[0] > 0 and bgr.shape[1] > 0 and (expected_hw is None or bgr.shape[:2] == expected_hw))


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[:, :, ::-1])


class _ClosingSource:
    """A source is its own context manager: leaving the `with` block calls `close()`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class VideoFileSource(_ClosingSource):
    """Frames of a video file decoded by OpenCV (FFmpeg backend).

    start > 0 seeks to that frame index first (a chunk of the file: frames start to
    max_frames - 1). A container's seek can land on the wrong frame: callers that need
    exactness check what they got (realtime/batch.py compares frame hashes at the seams)."""

    def __init__(self, path: str | Path, max_frames: int | None = None, start: int = 0) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            if self.path.exists():
                raise UserError(f"{self.path} is not a regular file (a device or a pipe): give a video file")
            raise UserError(f"video file not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        ok, first = (self._cap.read() if self._cap.isOpened() else (False, None))
        if not ok or not _valid_image(first, None):
            self._cap.release()
            raise UserError(f"cannot decode {self.path} as a video (unsupported, truncated or corrupt file)")
        self._first = first
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and 0.5 < fps < 1000 else DEFAULT_FPS
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = n if n > 0 else None
        if max_frames is not None and self.frame_count is not None:
            self.frame_count = min(self.frame_count, max_frames)
        self.max_frames = max_frames
        self.start = int(start)
        self.size = (int(first.shape[1]), int(first.shape[0]))  # (width, height)
        self.skipped: list[int] = []

    def close(self) -> None:
        self._cap.release()

    def __iter__(self) -> Iterator[Frame]:
        hw = (self.size[1], self.size[0])
        index, fails = 0, 0
        pending: list[int] = []  # undecodable indices not yet followed by a good frame
        bgr = self._first
        if self.start > 0:
            import cv2

            self._cap.set(cv2.CAP_PROP_POS_FRAMES, self.start)
            bgr, index = None, self.start
        while self.max_frames is None or index < self.max_frames:
            if bgr is None:
                ok, bgr = self._cap.read()
                if not ok:
                    bgr = None
                    more = self.frame_count is not None and index < self.frame_count
                    if not more or fails >= MAX_CONSECUTIVE_FAILURES:
                        break
            if bgr is not None and _valid_image(bgr, hw):
                for i in pending:
                    log.warning("%s: frame %d could not be decoded; skipped", self.path, i)
                self.skipped += pending
                pending, fails = [], 0
                yield Frame(index, index / self.fps, _to_rgb(bgr))
            else:
                pending.append(index)
                fails += 1
            bgr = None
            index += 1
        if pending:  # trailing failures: the header promised frames the file does not hold
            log.warning("%s: the last %d frame(s) (from %d) could not be decoded (truncated file?)",
                        self.path, len(pending), pending[0])
            self.skipped += pending


@contextmanager
def _opencv_silent():
    """OpenCV's own log lines off (e.g. "Camera index out of range" when a camera cannot be
    opened): the caller reports the failure once, in one line."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class WebcamSource(_ClosingSource):
    """Live frames from an OpenCV camera index (0, 1, ...) or a device path (/dev/video0)."""

    def __init__(self, device: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, max_frames: int | None = None, warmup_s: float = 2.0) -> None:
        import cv2

        self.device = device
        with _opencv_silent():
            self._cap = cv2.VideoCapture(device)
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        if not self._cap.isOpened():
            self._cap.release()
            raise UserError(f"cannot open webcam {device!r} (no such device, or it is busy)")
        got = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = got if np.isfinite(got) and got > 0.5 else (fps or DEFAULT_FPS)
        self.max_frames = max_frames
        self.warmup_s = warmup_s
        self.skipped: list[int] = []

    def close(self) -> None:
        self._cap.release()

    def __iter__(self) -> Iterator[Frame]:
        t0 = time.monotonic()
        index, fails, hw = 0, 0, None
        while self.max_frames is None or index < self.max_frames:
            ok, bgr = self._cap.read()
            t = time.monotonic() - t0
            if ok and _valid_image(bgr, hw):
                hw, fails = bgr.shape[:2], 0
                yield Frame(index, t, _to_rgb(bgr))
            else:
                fails += 1
                self.skipped.append(index)
                log.warning("webcam %r: frame %d could not be read; skipped", self.device, index)
                # Cameras often fail a few reads while starting; a long run means it is gone.
                if fails >= MAX_CONSECUTIVE_FAILURES and t > self.warmup_s:
                    raise UserError(f"webcam {self.device!r} stopped delivering frames")
                time.sleep(0.01)
            index += 1


class ImageFolderSource(_ClosingSource):
    """The images of a folder in name order, as frames at `fps`."""

    def __init__(self, folder: str | Path, fps: float = DEFAULT_FPS, max_frames: int | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"image folder not found: {self.folder}")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.folder}")
        if max_frames is not None:
            self.files = self.files[:max_frames]
        self.fps = float(fps)
        self.frame_count = len(self.files)
        self.skipped: list[int] = []

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        for index, path in enumerate(self.files):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if not _valid_image(bgr, None):
                log.warning("%s: unreadable image; skipped (frame %d)", path, index)
                self.skipped.append(index)
                continue
            yield Frame(index, index / self.fps, _to_rgb(bgr))


Source = VideoFileSource | WebcamSource | ImageFolderSource


def open_source(spec: str, max_frames: int | None = None, fps: float = DEFAULT_FPS) -> Source:
    """'0', '1', ... or '/dev/videoN' -> webcam; a folder -> its images; a file -> video."""
    if spec.isdigit():
        return WebcamSource(int(spec), max_frames=max_frames)
    if spec.startswith("/dev/video"):
        return WebcamSource(spec, max_frames=max_frames)
    p = Path(spec)
    if p.is_dir():
        return ImageFolderSource(p, fps=fps, max_frames=max_frames)
    return VideoFileSource(p, max_frames=max_frames)
