"""MediaPipe's pose landmark model run by ourselves on people's crops, batched over people.

MediaPipe Tasks runs its landmark model once per call, each call with its own overhead
(image conversion, graph scheduling, its own tracking and smoothing), and in IMAGE mode its
person detector first. Where the several-people path already knows where a person is (a
tracked person, predicted from their last frames), the landmark model alone is enough: this
module crops each such person as BlazePose's landmark stage does (a square region centred on
the hips, turned so that the body stands upright in it) and runs
`pose_landmarks_detector.tflite` (inside models/pose_landmarker_full.task) on every crop of a
frame in one interpreter call (ai-edge-litert, XNNPACK).

    Roi                 a rotated square region of an image (centre, side px, rotation)
    roi_from_joints     the region of a person from their 17 joints (realtime.tracker's
                        prediction): centre the hips, up the hip -> shoulder line, side
                        ROI_SCALE x the body's reach from the hips
    crop                image -> the model's (256, 256, 3) float input in [0, 1]
    decode              the model's outputs for one crop -> a realtime.detector.Detection in
                        the full image's pixels (None when the pose-presence score is low)
    LandmarkRunner      the interpreter: detect(crops) -> one Detection (or None) per crop

The model's outputs (checked on the shipped file): landmarks (1, 195) = 39 x (x, y, z,
visibility logit, presence logit), x and y in input pixels (0..256); pose presence (1, 1) in
[0, 1]; segmentation (1, 256, 256, 1); heatmap (1, 64, 64, 39); world landmarks (1, 117) =
39 x (x, y, z) m, hip-centred, in the crop's orientation. The first 33 landmarks are
MediaPipe's; the last 6 are auxiliary (the region of the next frame). MediaPipe refines the
landmarks from the heatmap and smooths them over frames in VIDEO mode; neither is done here.

Pixel convention as realtime.detector: integer image coordinates are pixel centres.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from realtime.detector import DEFAULT_MODEL, Detection, _quiet_native_stderr, check_rgb, detection_from_landmarks
from realtime.tracker import confident_joints

MODEL_MEMBER = "pose_landmarks_detector.tflite"
INPUT = 256              # the model's input side, px
MODEL_LANDMARKS = 39     # landmarks the model returns (MediaPipe's 33, then 6 auxiliary)
KEPT_LANDMARKS = 33
ROI_SCALE = 1.25         # BlazePose: the region is 1.25x the circle around the body
REACH_MARGIN = 1.15      # the body's circle: the farthest confident joint from the hips, and this margin
MIN_PRESENCE = 0.5       # a crop whose pose-presence score is lower holds nobody
L_HIP, R_HIP, L_SHOULDER, R_SHOULDER = 4, 1, 11, 14  # engines.skeleton joint indices


@dataclass(frozen=True)
class Roi:
    """A square region of an image: centre (cx, cy) px, side px, and rotation rad (clockwise
    on the image, whose y points down): the crop's up is the image direction
    (sin rotation, -cos rotation)."""

    cx: float
    cy: float
    side: float
    rotation: float = 0.0

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) crop pixel (centre convention, INPUT x INPUT) -> image pixel transform."""
        k = self.side / INPUT
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        h = (INPUT - 1) / 2.0
        return np.array([[k * c, -k * s, self.cx - k * (c - s) * h],
                         [k * s, k * c, self.cy - k * (s + c) * h]])

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Model coordinates (..., 2) (input pixels, 0..INPUT edge to edge, as the model
        returns them) -> image pixels (..., 2)."""
        a = np.asarray(xy, np.float64) - 0.5  # edge -> centre convention
        m = self.affine
        return a @ m[:, :2].T + m[:, 2]

    def to_model(self, uv: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) -> model coordinates (..., 2) (inverse of to_image)."""
        m = self.affine
        return (np.asarray(uv, np.float64) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T + 0.5


def _rotation(up: np.ndarray) -> float:
    """The rotation (rad, in [-pi, pi)) that turns the image vector `up` (y down) to the
    crop's up."""
    angle = math.pi / 2 - math.atan2(-float(up[1]), float(up[0]))
    return (angle + math.pi) % (2 * math.pi) - math.pi


def roi_from_joints(uv: np.ndarray, conf: np.ndarray, min_side: float = 0.0) -> Roi | None:
    """The region BlazePose's landmark stage would look at for a person whose 17 joints are
    uv (17, 2) px with confidence (17,): centred on the hips, the hip -> shoulder line up,
    ROI_SCALE x the diameter of the circle around the confident joints centred on the hips
    (at least min_side px). None without confident hips and shoulders."""
    uv, conf = np.asarray(uv, np.float64), np.asarray(conf, np.float64)
    ok = confident_joints(uv, conf)
    if not ok[[L_HIP, R_HIP, L_SHOULDER, R_SHOULDER]].all():
        return None
    hips = 0.5 * (uv[L_HIP] + uv[R_HIP])
    shoulders = 0.5 * (uv[L_SHOULDER] + uv[R_SHOULDER])
    if np.linalg.norm(shoulders - hips) < 1.0:
        return None
    reach = float(np.linalg.norm(uv[ok] - hips, axis=1).max()) * REACH_MARGIN
    side = max(2.0 * ROI_SCALE * reach, float(min_side))
    return Roi(float(hips[0]), float(hips[1]), side, _rotation(shoulders - hips))


def crop(image: np.ndarray, roi: Roi) -> np.ndarray:
    """The model's input for roi of image (H, W, 3) uint8 RGB: (INPUT, INPUT, 3) float32 in
    [0, 1], black outside the image."""
    import cv2

    check_rgb(image)
    out = cv2.warpAffine(image, roi.affine, (INPUT, INPUT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(np.float32) * np.float32(1.0 / 255.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def decode(landmarks: np.ndarray, world: np.ndarray, presence: float, roi: Roi,
           min_presence: float = MIN_PRESENCE) -> Detection | None:
    """One crop's model outputs -> the person in the full image's pixels: landmarks (195,)
    (39 x (x, y, z, visibility logit, presence logit), input pixels), world (117,) (39 x 3 m,
    in the crop's orientation, turned back here to the image's), presence the pose-presence
    score. None when presence < min_presence (nobody in the crop) or the values are not
    finite."""
    lm = np.asarray(landmarks, np.float64).reshape(MODEL_LANDMARKS, 5)[:KEPT_LANDMARKS]
    wm = np.asarray(world, np.float64).reshape(MODEL_LANDMARKS, 3)[:KEPT_LANDMARKS]
    if not (float(presence) >= min_presence and np.isfinite(lm).all() and np.isfinite(wm).all()):
        return None
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    world_img = np.stack([c * wm[:, 0] - s * wm[:, 1], s * wm[:, 0] + c * wm[:, 1], wm[:, 2]], axis=1)
    return detection_from_landmarks(roi.to_image(lm[:, :2]), _sigmoid(lm[:, 3]), world_img)


class LandmarkRunner:
    """The landmark model on an ai-edge-litert interpreter (XNNPACK). detect() runs every crop
    of a frame in one call (the input is resized to the batch on a change of its size). Not
    thread-safe. Use as a context manager or call close()."""

    def __init__(self, model_path: str | Path | None = None, threads: int | None = None,
                 min_presence: float = MIN_PRESENCE) -> None:
        """model_path: a MediaPipe .task bundle (default the shipped one) or the .tflite
        itself. threads: XNNPACK threads (default: up to 2, the machine's cores)."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise UserError("the batched landmark model needs ai-edge-litert: pip install ai-edge-litert") from e
        path = Path(model_path) if model_path else DEFAULT_MODEL
        if not path.is_file():
            raise UserError(f"MediaPipe model {path} not found: run `python scripts/build_mediapipe_model.py`")
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    content = z.read(MODEL_MEMBER)
            else:
                content = path.read_bytes()
        except (KeyError, OSError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: no readable {MODEL_MEMBER} ({e})") from e
        n = int(threads) if threads else max(1, min(2, os.cpu_count() or 1))
        with _quiet_native_stderr():
            self._it = Interpreter(model_content=content, num_threads=n)
            self._it.allocate_tensors()
        self.min_presence = float(min_presence)
        self._input = self._it.get_input_details()[0]["index"]
        self._batch = 1
        self._outputs = self._output_indices()
        self.calls = 0  # interpreter calls made (one per detect with crops)

    def _output_indices(self) -> tuple[int, int, int]:
        """The (landmarks, presence, world) output tensor indices, told apart by their shapes."""
        by_size = {int(np.prod(d["shape"][1:])): d["index"] for d in self._it.get_output_details()}
        try:
            return by_size[MODEL_LANDMARKS * 5], by_size[1], by_size[MODEL_LANDMARKS * 3]
        except KeyError as e:
            raise UserError(f"{MODEL_MEMBER}: unexpected outputs {sorted(by_size)}") from e

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._it.resize_tensor_input(self._input, [batch, INPUT, INPUT, 3])
            self._it.allocate_tensors()
            self._batch = batch

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """crops (N, INPUT, INPUT, 3) float32 in [0, 1] -> landmarks (N, 195), presence (N,),
        world landmarks (N, 117), the raw outputs, in one interpreter call."""
        x = np.ascontiguousarray(crops, np.float32)
        if x.ndim != 4 or x.shape[1:] != (INPUT, INPUT, 3) or len(x) == 0:
            raise ValueError(f"expected (N, {INPUT}, {INPUT}, 3) crops, got {x.shape}")
        self._resize(len(x))
        self._it.set_tensor(self._input, x)
        self._it.invoke()
        self.calls += 1
        lm, pres, world = (self._it.get_tensor(i) for i in self._outputs)
        return lm.reshape(len(x), -1).copy(), pres.reshape(len(x)).copy(), world.reshape(len(x), -1).copy()

    def detect(self, images: list[np.ndarray], rois: list[Roi]) -> list[Detection | None]:
        """The person in each roi of its image (images[i] (H, W, 3) uint8 RGB, the same array
        may repeat), all in one call: a Detection in that image's pixels, or None where the
        crop holds nobody (pose presence below min_presence)."""
        if len(images) != len(rois):
            raise ValueError(f"{len(images)} images for {len(rois)} regions")
        if not rois:
            return []
        lm, pres, world = self.run(np.stack([crop(im, r) for im, r in zip(images, rois)]))
        return [decode(lm[i], world[i], float(pres[i]), r, self.min_presence) for i, r in enumerate(rois)]

    def close(self) -> None:
        self._it = None

    def __enter__(self) -> "LandmarkRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
