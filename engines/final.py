"""The Final model as one object: crop -> generator (coarse 3D, FBI) -> refiner -> 3D.

    with FinalModel.open("final") as m:            # models/final.{pt,onnx}: a refiner
        out = m.lift(image_rgb, uv_px, f, c)       # FinalOutput

A refiner artifact names its generator in its metadata ("generator": a shipped model name or
path, recorded by train.train_refiner and copied into the ONNX by engines.onnx_export), so one
model name opens both stages, each on the requested backend (engines.backends).
Used by the app (realtime.estimator) and by the evaluation of real frames (train), so both
run exactly the same steps. No torch unless the torch backend is chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.crop import CropBox, box_from_joints, crop_image
from engines.errors import UserError
from engines.normalize import features_2d
from engines.skeleton import NUM_FBI_BONES, NUM_JOINTS


@dataclass(frozen=True)
class FinalOutput:
    """One person. joints_mm (17, 3) root-relative camera-space mm; coarse_mm (17, 3) the
    generator's coarse 3D; fbi_prob (14, 3) (forward, backward, parallel); box the crop."""

    joints_mm: np.ndarray
    coarse_mm: np.ndarray
    fbi_prob: np.ndarray
    box: CropBox


def crop_input(image_rgb: np.ndarray, uv_px: np.ndarray) -> tuple[np.ndarray, np.ndarray, CropBox]:
    """(H, W, 3) uint8 image + (17, 2) joints px -> the generator's inputs: image (1, 3, 256,
    256) float32 in [0, 1], joints_crop (1, 17, 2) crop px, and the box (engines.crop)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise UserError(f"image must be (H, W, 3) uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
    uv = np.asarray(uv_px, np.float64)
    if uv.shape != (NUM_JOINTS, 2):
        raise UserError(f"2D joints must be ({NUM_JOINTS}, 2) px, got {uv.shape}")
    if not np.isfinite(uv).all():
        raise UserError("2D joints must be finite (a missing joint cannot place the crop)")
    box = box_from_joints(uv)
    crop = crop_image(image_rgb, box)
    img = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)
    return img, box.image_to_crop(uv)[None].astype(np.float32), box


class FinalModel:
    """Generator + refiner backends. Close it when done (or use `with`)."""

    def __init__(self, generator: Any, refiner: Any) -> None:
        self.generator, self.refiner = generator, refiner
        self.name = getattr(refiner, "name", "?")
        self.metadata = dict(getattr(refiner, "metadata", {}))

    @classmethod
    def open(cls, model: str, backend: str = "auto", threads: int | None = None,
             generator: str | None = None) -> "FinalModel":
        from engines.backends import open_backend

        return cls.from_refiner(open_backend(model, backend, threads=threads), backend, threads, generator)

    @classmethod
    def from_refiner(cls, refiner: Any, backend: str = "auto", threads: int | None = None,
                     generator: str | None = None) -> "FinalModel":
        """Wrap an already opened refiner backend (it is not loaded twice) and open the
        generator it names on `backend`. The refiner is closed if anything fails."""
        from engines.backends import open_backend

        try:
            if refiner.metadata.get("stage") != "refiner":
                raise UserError(f"the model is a {refiner.metadata.get('stage')!r} model, not a refiner")
            gen_name = generator or refiner.metadata.get("generator")
            if not gen_name:
                raise UserError("the refiner does not name its generator; pass one explicitly")
            return cls(open_backend(str(gen_name), backend, threads=threads), refiner)
        except Exception:
            refiner.close()
            raise

    def __enter__(self) -> "FinalModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.generator.close()
        self.refiner.close()

    def lift(self, image_rgb: np.ndarray, uv_px: np.ndarray, f: np.ndarray, c: np.ndarray) -> FinalOutput:
        """One frame: image (H, W, 3) uint8 RGB, 2D joints (17, 2) px, intrinsics f, c (2,) px."""
        return self.lift_batch(image_rgb, np.asarray(uv_px)[None], f, c)[0]

    def lift_batch(self, image_rgb: np.ndarray, uv_px: np.ndarray, f: np.ndarray, c: np.ndarray) -> list[FinalOutput]:
        """Several people of one frame: image (H, W, 3) uint8 RGB, their 2D joints (P, 17, 2) px,
        intrinsics f, c (2,) px. One generator and one refiner call for all P crops."""
        uv = np.asarray(uv_px, np.float64)
        if uv.ndim != 3 or len(uv) == 0:
            raise UserError(f"2D joints must be (P, {NUM_JOINTS}, 2) px with P >= 1, got {uv.shape}")
        inputs = [crop_input(image_rgb, u) for u in uv]
        img = np.concatenate([i[0] for i in inputs])
        jc = np.concatenate([i[1] for i in inputs])
        joints, coarse, prob = self.lift_crops(img, jc, features_2d(uv, f, c))
        return [FinalOutput(joints[k], coarse[k], prob[k], inputs[k][2]) for k in range(len(uv))]

    def lift_crops(self, image: np.ndarray, joints_crop: np.ndarray,
                   features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The two stages on prepared inputs (crop_input's, for P people of any frames):
        image (P, 3, 256, 256) float32 in [0, 1], joints_crop (P, 17, 2) crop px, features
        (P, 37) engines.normalize.features_2d of each one's image 2D with its intrinsics.
        Returns root-relative joints (P, 17, 3) mm, coarse 3D (P, 17, 3) mm and FBI
        probabilities (P, 14, 3), float32."""
        P = len(image)
        g = self.generator.run({"image": image, "joints_crop": joints_crop})
        coarse = np.asarray(g["coarse_mm"], np.float32)
        prob = np.asarray(g["fbi_prob"], np.float32)
        assert coarse.shape == (P, NUM_JOINTS, 3) and prob.shape == (P, NUM_FBI_BONES, 3), (coarse.shape, prob.shape)
        joints = np.asarray(self.refiner.run({"features": features, "coarse_mm": coarse, "fbi_prob": prob})["joints_mm"],
                            np.float32)
        return joints - joints[:, :1], coarse, prob
