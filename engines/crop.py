"""Square person crops with an exact affine map between crop and image pixels.

A crop is defined by a centre (cx, cy) and a side length s in image pixels; the crop image
is CROP_SIZE x CROP_SIZE. Pixel convention: integer coordinates are pixel centres (OpenCV's
warpAffine convention), so image point p maps to crop point A @ [p, 1] with
    A = [[k, 0, -k*cx + (S-1)/2], [0, k, -k*cy + (S-1)/2]],  k = S / s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROP_SIZE = 256
BOX_MARGIN = 1.25  # side = margin * the joints' larger bbox extent (room for hands, feet, head)


@dataclass(frozen=True)
class CropBox:
    """Centre (cx, cy) and side, image pixels; `size` is the output crop side in pixels."""

    cx: float
    cy: float
    side: float
    size: int = CROP_SIZE

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) image -> crop pixel transform."""
        k = self.size / self.side
        h = (self.size - 1) / 2.0
        return np.array([[k, 0.0, h - k * self.cx], [0.0, k, h - k * self.cy]])

    @property
    def inverse_affine(self) -> np.ndarray:
        """(2, 3) crop -> image pixel transform."""
        k = self.side / self.size
        h = (self.size - 1) / 2.0
        return np.array([[k, 0.0, self.cx - k * h], [0.0, k, self.cy - k * h]])

    def image_to_crop(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) image px -> (..., 2) crop px."""
        A = self.affine
        return pts @ A[:, :2].T + A[:, 2]

    def crop_to_image(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) crop px -> (..., 2) image px."""
        A = self.inverse_affine
        return pts @ A[:, :2].T + A[:, 2]


def box_from_joints(uv: np.ndarray, margin: float = BOX_MARGIN, size: int = CROP_SIZE,
                    valid: np.ndarray | None = None, min_side: float = 32.0) -> CropBox:
    """Square box around the (valid, finite) 2D joints (J, 2) in image pixels."""
    pts = np.asarray(uv, np.float64)
    ok = np.isfinite(pts).all(axis=-1)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    if not ok.any():
        raise ValueError("no valid joints to build a crop box from")
    pts = pts[ok]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    c = (lo + hi) / 2.0
    side = max(float((hi - lo).max()) * margin, min_side)
    return CropBox(float(c[0]), float(c[1]), side, size)


def crop_image(image: np.ndarray, box: CropBox, border_value: int = 0) -> np.ndarray:
    """Warp an (H, W, C) uint8 image to the (size, size, C) crop; outside pixels = border."""
    import cv2

    return cv2.warpAffine(image, box.affine, (box.size, box.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3)
