"""Thumbnails for the browser viewer and the preview video: `ImageTap` keeps recent frames'
images (a PoseFrame carries no pixels), `draw_overlay` draws the 2D skeleton on a downscaled
copy, `encode_jpeg` makes the bytes the server sends."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from realtime.frames import Frame, PoseFrame
from realtime.preview import draw_skeleton

THUMB_WIDTH = 320
THUMB_QUALITY = 70
# ImageTap's memory: the images a file's preview waits on (a centred model answers seconds
# after the frame) stay within this, downscaled if need be, whatever the input's size.
TAP_BUDGET_BYTES = 256 * 2**20


class ImageTap:
    """Remembers the images of the last `keep` frames (by index), so the caller can draw on
    the image of a PoseFrame, which carries no pixels. Thread-safe (written by the detect
    thread, read by the caller). `wrap(fn)` returns fn with the tap in front.

    A stream whose lifter holds frames back (a centred model, files) answers a frame seconds
    after its image was read: `hold(frames)` raises `keep` to that many (Estimator.stream
    does). Memory stays within `budget_bytes` whatever the frame size: an image larger than
    budget_bytes / keep is kept downscaled to that size (the preview and the thumbnails are
    drawn on it; poses keep their source pixel coordinates, and the drawing scales them by
    the image's size over PoseFrame.image_size)."""

    def __init__(self, keep: int = 8, budget_bytes: int = TAP_BUDGET_BYTES) -> None:
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep
        self.budget_bytes = budget_bytes

    def hold(self, frames: int) -> None:
        """Keep at least `frames` images (set before the stream starts)."""
        with self._lock:
            self.keep = max(self.keep, int(frames))

    def put(self, frame: Frame) -> None:
        image = self._fitted(frame.image)
        with self._lock:
            self._images[frame.index] = image
            while len(self._images) > self.keep:
                self._images.popitem(last=False)

    def _fitted(self, image: np.ndarray) -> np.ndarray:
        """`image`, downscaled (same aspect) when `keep` of it would exceed the budget."""
        per_image = self.budget_bytes / max(1, self.keep)
        if image.nbytes <= per_image:
            return image
        import cv2

        h, w = image.shape[:2]
        s = (per_image / image.nbytes) ** 0.5
        return cv2.resize(image, (max(2, int(w * s)), max(2, int(h * s))), interpolation=cv2.INTER_AREA)

    def get(self, index: int) -> np.ndarray | None:
        with self._lock:
            return self._images.get(index)

    def wrap(self, fn: Callable[[Frame], Any]) -> Callable[[Frame], Any]:
        def tapped(frame: Frame) -> Any:
            self.put(frame)
            return fn(frame)
        return tapped


def draw_overlay(image: np.ndarray, pf: PoseFrame, width: int = THUMB_WIDTH) -> np.ndarray:
    """A downscaled RGB copy of `image` with the 2D skeleton drawn (left blue, right red)."""
    import cv2

    h, w = image.shape[:2]
    s = width / w
    small = cv2.resize(image, (width, max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    if pf.valid:  # joints in source pixels; the image may have been kept downscaled (ImageTap)
        src_w = pf.image_size[0] if pf.image_size and pf.image_size[0] > 0 else w
        draw_skeleton(small, np.asarray(pf.joints_2d_px, np.float64) * (width / src_w))
    return small


def encode_jpeg(rgb: np.ndarray, quality: int = THUMB_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
