"""engines.crop: exact image <-> crop mapping, and the pixels agree with the mapping."""
from __future__ import annotations

import numpy as np
import pytest

from engines.crop import CROP_SIZE, CropBox, box_from_joints, crop_image


def test_point_round_trip():
    box = CropBox(cx=321.7, cy=118.2, side=173.9)
    pts = np.random.default_rng(0).uniform(-100, 700, size=(50, 2))
    np.testing.assert_allclose(box.crop_to_image(box.image_to_crop(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(box.image_to_crop(box.crop_to_image(pts)), pts, atol=1e-9)


def test_box_centre_maps_to_crop_centre_and_side_to_size():
    box = CropBox(200.0, 150.0, 100.0)
    c = box.image_to_crop(np.array([[200.0, 150.0], [250.0, 150.0]]))
    h = (CROP_SIZE - 1) / 2
    np.testing.assert_allclose(c[0], [h, h])
    np.testing.assert_allclose(c[1, 0] - c[0, 0], CROP_SIZE / 2)


def test_crop_pixels_match_the_point_mapping():
    """A bright dot drawn in the image lands where image_to_crop says, after crop_image."""
    img = np.zeros((480, 640, 3), np.uint8)
    dot = np.array([412.0, 233.0])
    img[233, 412] = 255
    box = CropBox(400.0, 240.0, 64.0)  # 4x magnification: the dot spreads, its peak stays
    crop = crop_image(img, box)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    peak = np.unravel_index(np.argmax(crop[:, :, 0]), crop.shape[:2])[::-1]
    np.testing.assert_allclose(peak, box.image_to_crop(dot), atol=1.0)
    # and back: the crop peak maps to the dot in the image
    np.testing.assert_allclose(box.crop_to_image(np.asarray(peak, float)), dot, atol=0.25)


def test_box_from_joints_contains_the_joints_with_margin():
    uv = np.array([[100, 50], [140, 300], [80, 200], [np.nan, np.nan]], float)
    box = box_from_joints(uv)
    c = box.image_to_crop(uv[:3])
    assert (c > 0).all() and (c < CROP_SIZE - 1).all()
    assert box.side == pytest.approx(250 * 1.25)
    with pytest.raises(ValueError):
        box_from_joints(np.full((17, 2), np.nan))
