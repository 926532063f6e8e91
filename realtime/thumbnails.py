"""Thumbnails for the browser viewer: `ImageTap` keeps recent frames' images (a PoseFrame
carries no pixels), `draw_overlay` draws the 2D skeleton on a downscaled copy, `encode_jpeg`
makes the bytes the server sends."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from realtime.frames import Frame, PoseFrame
from realtime.preview import draw_skeleton

THUMB_WIDTH = 320
THUMB_QUALITY = 70


class ImageTap:
    """Remembers the images of the last `keep` frames (by index), so the caller can draw a
    thumbnail for a PoseFrame, which carries no pixels. Thread-safe (written by the detect
    thread, read by the caller). `wrap(fn)` returns fn with the tap in front."""

    def __init__(self, keep: int = 8) -> None:
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def put(self, frame: Frame) -> None:
        with self._lock:
            self._images[frame.index] = frame.image
            while len(self._images) > self.keep:
                self._images.popitem(last=False)

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
    if pf.valid:
        draw_skeleton(small, np.asarray(pf.joints_2d_px, np.float64) * s)
    return small


def encode_jpeg(rgb: np.ndarray, quality: int = THUMB_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
