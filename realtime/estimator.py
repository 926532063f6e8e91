"""Per-frame 3D pose estimation: MediaPipe 2D -> lifter -> metric root trajectory.

The lifter is a Base lifter (2D only) or the Final model (engines.final: the 256 crop through
the generator's depth and FBI branches, then the refiner); PoseFrame.fbi is filled by Final.

`PoseEstimator.process(frame) -> PoseFrame` does everything for one frame; the two halves
`detect(frame) -> Detected` and `lift(detected) -> PoseFrame` can run in different threads
(realtime/pipeline.py). The lifter input is `engines.normalize.features_2d(uv, f, c)` with
intrinsics from `realtime.trajectory.intrinsics_for` (calibration file, else a pinhole
camera with --fov, default 60 degrees horizontal). With `trajectory=True` (default) the
TrajectoryStage fills translation_mm (the pelvis in camera space: camera-space joints are
joints_mm + translation_mm); joints_mm is always root-relative, translation_mm NaN without it.
Needs torch only when the torch backend is chosen.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.checkpoint import BASE_MODEL
from engines.errors import UserError
from engines.normalize import features_2d
from engines.skeleton import NUM_JOINTS
from realtime.detector import Detection, PoseDetector
from realtime.frames import Frame, PoseFrame
from realtime.trajectory import TrajectoryStage, intrinsics_for


@dataclass(frozen=True)
class Detected:
    """What crosses detect -> lift: the frame's identity and its detection (None = nobody)."""

    index: int
    timestamp_s: float
    image_size: tuple[int, int]
    detection: Detection | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB, kept only when the lifter needs the crop


# The model stages PoseEstimator lifts with: a Base lifter (2D only), or the Final model's
# refiner (its generator runs on the person crop). Other shipped models (the generator alone,
# the temporal lifters, evaluation-only forms) are refused by name, with this list.
LIFT_STAGES = frozenset({"lifter", "refiner"})


def runnable_models() -> list[str]:
    """The shipped models `posestream video` / `webcam` and the API can run."""
    from engines.backends import shipped_models

    return sorted(name for name, meta in shipped_models().items() if meta.get("stage") in LIFT_STAGES)


def open_lifter(model: str, backend: str = "auto", threads: int | None = None):
    """The lifter on the requested runtime. Uses engines.backends.open_backend when present
    (ONNX Runtime / TensorRT / torch), else the torch checkpoint. A refiner (the Final model)
    comes back as an engines.final.FinalModel, its generator opened on the same runtime.
    UserError, listing the runnable models, for a model of a stage it cannot lift with."""
    try:
        from engines.backends import open_backend
    except ImportError:
        open_backend = None
    if open_backend is not None:
        from engines.backends import shipped_models

        if not Path(model).suffix and str(model) not in shipped_models():
            raise UserError(f"unknown model {model!r}: not a file, and not a shipped model; this command runs "
                            f"{', '.join(runnable_models()) or 'none shipped'} (or a .onnx/.pt/.engine of those)")
        be = open_backend(model, backend, threads=threads)
        stage = be.metadata.get("stage")
        if stage not in LIFT_STAGES:
            be.close()
            raise UserError(f"{model} is a {stage} model, which this command cannot run; use one of: "
                            f"{', '.join(runnable_models()) or 'none shipped'} (or a .onnx/.pt/.engine of those)")
        if stage != "refiner":
            return be
        from engines.final import FinalModel

        return FinalModel.from_refiner(be, backend, threads)
    if backend not in ("auto", "torch"):
        raise UserError(f"backend {backend!r} is not available in this install (only torch)")
    from engines.backends.torch_backend import TorchBackend
    from engines.checkpoint import resolve_model_path

    return TorchBackend(resolve_model_path(model), threads=threads)


class PoseEstimator:
    """MediaPipe + lifter for a stream of frames (one person). Close it when done."""

    def __init__(self, model: str = BASE_MODEL, backend: str = "auto", fov_deg: float | None = None,
                 calib: str | Path | None = None, detector_mode: str = "video", num_poses: int = 1,
                 trajectory: bool = True, threads: int | None = None,
                 detector: PoseDetector | None = None, lifter=None) -> None:
        intrinsics_for((640, 480), fov_deg, calib)  # bad --fov / --calib fail now, not on frame 1
        self.lifter = lifter if lifter is not None else open_lifter(model, backend, threads)
        self.detector = detector if detector is not None else PoseDetector(mode=detector_mode, num_poses=num_poses)
        self.trajectory = TrajectoryStage(fov_deg, calib) if trajectory else None
        # The camera model, resolved once per frame size (TrajectoryStage.intrinsics caches it):
        # the trajectory stage's own when there is one, so both use the same intrinsics.
        self._camera = self.trajectory or TrajectoryStage(fov_deg, calib)
        # The Final model needs the crop: detect() then keeps the frame's pixels for lift().
        self.needs_image = callable(getattr(self.lifter, "lift", None))

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.detector.close()
        self.lifter.close()

    @property
    def backend_name(self) -> str:
        return str(getattr(self.lifter, "name", "?"))

    def detect(self, frame: Frame) -> Detected:
        h, w = frame.image.shape[:2]
        t0 = time.perf_counter()
        det = self.detector.detect(frame.image, frame.timestamp_s)
        ms = (time.perf_counter() - t0) * 1000.0
        return Detected(frame.index, frame.timestamp_s, (int(w), int(h)), det, {"detect": ms},
                        frame.image if self.needs_image and det is not None else None)

    def lift(self, d: Detected) -> PoseFrame:
        if d.detection is None or not np.isfinite(d.detection.joints_2d_px).all():
            # nobody, or a detection with unusable 2D: an empty frame in its place, never a crash
            return PoseFrame.empty(d.index, d.timestamp_s, d.image_size, d.timings_ms)
        t0 = time.perf_counter()
        intr = self._camera.intrinsics(d.image_size)
        uv = d.detection.joints_2d_px
        fbi = None
        if self.needs_image:
            if d.image is None:
                raise UserError("the Final model needs the frame's pixels: detect() did not keep them")
            out = self.lifter.lift(d.image, uv, intr.f, intr.c)
            rel, fbi = out.joints_mm, out.fbi_prob
        else:
            feats = features_2d(uv, intr.f, intr.c)[None]
            joints = np.asarray(self.lifter.run({"features": feats})["joints_mm"], np.float32)
            assert joints.shape == (1, NUM_JOINTS, 3), joints.shape
            rel = joints[0] - joints[0, 0]
        timings = dict(d.timings_ms, lift=(time.perf_counter() - t0) * 1000.0)
        det = d.detection
        pose = PoseFrame(d.index, d.timestamp_s, True, rel, np.full(3, np.nan, np.float32), uv,
                         det.confidence, d.image_size, fbi, timings, landmarks_px=det.landmarks_px,
                         landmarks_world_mm=det.landmarks_world_mm, landmarks_visibility=det.visibility)
        if self.trajectory is not None:
            pose = self.trajectory(pose)
        return pose

    def process(self, frame: Frame) -> PoseFrame:
        return self.lift(self.detect(frame))
