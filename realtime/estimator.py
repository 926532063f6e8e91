"""3D pose estimation: MediaPipe 2D -> lifter -> metric root trajectory.

The lifter is a single-frame model (a Base lifter on 2D only, or the Final model:
engines.final, the 256 crop through the generator's depth and FBI branches, then the refiner;
PoseFrame.fbi is filled by Final) or a temporal lifter (engines.temporal: a window of 2D
frames at the model's spacing, centred for files, causal for live use).

Two halves that can run in different threads (realtime/pipeline.py):
    detect(frame) -> Detected        MediaPipe on one frame: per frame, independent of the rest
    sequence(root) -> SequenceLifter the lifting of a *sequence* of detections (one person):
                                     push(Detected) -> PoseFrames that became ready, flush()
`realtime.sequence.lift_sequence(detections, estimator)` is the second half as a pure function
of the detections and their timestamps, so 2D found in any order or in parallel chunks lifts
to the same result. `process(frame)` and `lift(detected)` remain for single-frame models
(every frame alone, per-frame root solve).

The lifter input is `engines.normalize.features_2d(uv, f, c)` with intrinsics from
`realtime.trajectory.intrinsics_for` (calibration file, else a pinhole camera with --fov,
default 60 degrees horizontal). With `trajectory=True` (default) the root translation is solved
per frame (TrajectoryStage) and, in `sequence`, filtered over time (RootTrajectory);
joints_mm is always root-relative, translation_mm NaN without it.
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
from engines.temporal import AVERAGED_REACH, AVERAGED_STAGE
from realtime.detector import Detection, PoseDetector
from realtime.filters import BodyConfig
from realtime.frames import Frame, PoseFrame
from realtime.history import TemporalSpec
from realtime.sequence import SequenceLifter, usable
from realtime.trajectory import RootFilterConfig, TrajectoryStage, intrinsics_for


@dataclass(frozen=True)
class Detected:
    """What crosses detect -> lift: the frame's identity and its detection (None = nobody)."""

    index: int
    timestamp_s: float
    image_size: tuple[int, int]
    detection: Detection | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB, kept only when the lifter needs the crop
    track_id: int = 0  # the person's identity (realtime.tracker) when several people are tracked


# The single-frame stages PoseEstimator lifts with: a Base lifter (2D only), or the Final
# model's refiner (its generator runs on the person crop). Temporal lifters are recognised by
# the window in their metadata (realtime.history.TemporalSpec). Other shipped models (the
# generator alone, evaluation-only sequence forms) are refused by name, with the list.
LIFT_STAGES = frozenset({"lifter", "refiner"})


def liftable(meta: dict) -> bool:
    """Can PoseEstimator lift with a model of this artifact metadata?"""
    stage = str(meta.get("stage"))
    if stage in LIFT_STAGES:
        return True
    try:
        return TemporalSpec.from_metadata(meta) is not None and not stage.endswith("_sequence")
    except (TypeError, ValueError, UserError):
        return False


def runnable_models() -> list[str]:
    """The shipped models `posestream video` / `webcam` and the API can run."""
    from engines.backends import shipped_models

    return sorted(name for name, meta in shipped_models().items() if liftable(meta))


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
            if Path(model).exists():
                raise UserError(f"{model} is not a model checkpoint or ONNX model (a model file ends in .onnx, .pt "
                                f"or .engine); this command runs {', '.join(runnable_models()) or 'none shipped'}")
            raise UserError(f"unknown model {model!r}: not a file, and not a shipped model; this command runs "
                            f"{', '.join(runnable_models()) or 'none shipped'} (or a .onnx/.pt/.engine of those)")
        be = open_backend(model, backend, threads=threads)
        stage = be.metadata.get("stage")
        if not liftable(be.metadata):
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
    """MediaPipe + lifter (one person). Close it when done.

    detector_mode "video" tracks the person from frame to frame (with `redetect`, a frame where
    the tracker lost the person is searched again in IMAGE mode); "image" finds the person
    anew on every frame (unrelated stills)."""

    def __init__(self, model: str = BASE_MODEL, backend: str = "auto", fov_deg: float | None = None,
                 calib: str | Path | None = None, detector_mode: str = "video", num_poses: int = 1,
                 trajectory: bool = True, threads: int | None = None,
                 detector: PoseDetector | None = None, lifter=None, redetect: bool = False,
                 restart_frames: int | None = None, views: bool = False, mirror: bool = False) -> None:
        """restart_frames: restart the detector's tracking whenever the frame index enters a
        new multiple of it (realtime.detector.RESTART_FRAMES for files; None for live).
        views: IMAGE mode on unrelated stills, each searched again on turned views around the
        person (realtime.detector). mirror: average MediaPipe's 2D with its 2D of the
        mirrored frame (realtime.detector)."""
        if restart_frames is not None and restart_frames < 1:
            raise ValueError(f"restart_frames must be at least 1, got {restart_frames}")
        intrinsics_for((640, 480), fov_deg, calib)  # bad --fov / --calib fail now, not on frame 1
        self.lifter = lifter if lifter is not None else open_lifter(model, backend, threads)
        try:
            self.temporal = TemporalSpec.from_metadata(getattr(self.lifter, "metadata", {}))
            self.detector = detector if detector is not None else PoseDetector(
                mode=detector_mode, num_poses=num_poses, redetect=redetect, views=views, mirror=mirror)
        except BaseException:
            self.lifter.close()
            raise
        self.trajectory = TrajectoryStage(fov_deg, calib) if trajectory else None
        # The camera model, resolved once per frame size (TrajectoryStage.intrinsics caches it):
        # the trajectory stage's own when there is one, so both use the same intrinsics.
        self.camera = self.trajectory or TrajectoryStage(fov_deg, calib)
        # The Final model needs the crop: detect() then keeps the frame's pixels for lift().
        self.needs_image = callable(getattr(self.lifter, "lift", None))
        self.restart_frames = restart_frames
        self._segment: int | None = None  # index // restart_frames of the last detected frame

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

    def describe(self) -> str:
        """One line for the user: which kind of lifting runs."""
        t = self.temporal
        two_d = ", mirrored 2D" if getattr(self.detector, "mirror", False) else ""
        if t is None:
            return f"single-frame lifter{two_d}"
        kind = "causal" if t.causal else f"centred, reading {t.lookahead_s:.1f} s past each frame"
        ms = t.spacing_s * 1000
        frames = f"{t.window} frames {ms:g} ms apart"
        if (getattr(self.lifter, "metadata", None) or {}).get("stage") == AVERAGED_STAGE:
            # a time-averaged model reads more frames than its window: its output is the mean of
            # the windows centred on t and on the frames AVERAGED_REACH either side
            frames = (f"{t.window - 2 * AVERAGED_REACH}-frame window {ms:g} ms apart, averaged over "
                      f"+-{AVERAGED_REACH * ms:g} ms ({t.window} frames)")
        return f"temporal lifter ({frames}, {kind}){two_d}"

    def detect(self, frame: Frame) -> Detected:
        h, w = frame.image.shape[:2]
        t0 = time.perf_counter()
        if self.restart_frames is not None:
            segment = frame.index // self.restart_frames
            if self._segment is not None and segment != self._segment:
                self.detector.restart()
            self._segment = segment
        det = self.detector.detect(frame.image, frame.timestamp_s)
        ms = (time.perf_counter() - t0) * 1000.0
        return Detected(frame.index, frame.timestamp_s, (int(w), int(h)), det, {"detect": ms},
                        frame.image if self.needs_image and det is not None else None)

    # ---- lifting -------------------------------------------------------------------------
    def pose_of(self, d: Detected) -> tuple[np.ndarray, np.ndarray | None]:
        """A single-frame model on one usable detection: root-relative joints (17, 3) mm and
        FBI (14, 3) or None."""
        rel, fbi = self.poses_of([d])
        return rel[0], fbi[0]

    def poses_of(self, people: list[Detected]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """A single-frame model on usable detections of one frame (several people), in one
        batch: one lifter call (the Final model: one generator and one refiner call).
        Returns root-relative joints (N, 17, 3) float32 mm and each person's FBI (14, 3) or
        None, in the order of `people`."""
        d0 = people[0]
        assert all(d.image_size == d0.image_size and d.index == d0.index for d in people), "one frame's people"
        intr = self.camera.intrinsics(d0.image_size)
        uv = np.stack([d.detection.joints_2d_px for d in people])
        if self.needs_image:
            if d0.image is None:
                raise UserError("the Final model needs the frame's pixels: detect() did not keep them")
            outs = self.lifter.lift_batch(d0.image, uv, intr.f, intr.c)
            return np.stack([o.joints_mm for o in outs]).astype(np.float32), [o.fbi_prob for o in outs]
        joints = np.asarray(self.lifter.run({"features": features_2d(uv, intr.f, intr.c)})["joints_mm"], np.float32)
        assert joints.shape == (len(people), NUM_JOINTS, 3), joints.shape
        return joints - joints[:, :1], [None] * len(people)

    def frame_input(self, d: Detected) -> np.ndarray:
        """A temporal model's per-frame input of one usable detection: (37,) float32
        engines.normalize.features_2d of its 2D with the intrinsics of its frame size. The
        history resamples these (as the evaluation of the temporal models does)."""
        intr = self.camera.intrinsics(d.image_size)
        return features_2d(d.detection.joints_2d_px, intr.f, intr.c)

    def poses_of_windows(self, windows: np.ndarray) -> np.ndarray:
        """The temporal model on (N, window, D) windows of per-frame inputs (frame_input):
        root-relative joints (N, 17, 3) float32 mm of each window's reference frame."""
        joints = np.asarray(self.lifter.run({"features": np.asarray(windows, np.float32)})["joints_mm"], np.float32)
        assert joints.shape == (len(windows), NUM_JOINTS, 3), joints.shape
        return joints - joints[:, :1]

    def pose_frame(self, d: Detected, rel: np.ndarray, fbi: np.ndarray | None, timings: dict[str, float],
                   cold_start: bool = False) -> PoseFrame:
        """The PoseFrame of a usable detection and its lifted pose (with the detection's
        track_id), with the per-frame root solve."""
        det = d.detection
        pose = PoseFrame(d.index, d.timestamp_s, True, rel, np.full(3, np.nan, np.float32), det.joints_2d_px,
                         det.confidence, d.image_size, fbi, timings, track_id=d.track_id,
                         landmarks_px=det.landmarks_px, landmarks_world_mm=det.landmarks_world_mm,
                         landmarks_visibility=det.visibility, cold_start=cold_start)
        return self.trajectory(pose) if self.trajectory is not None else pose

    def lift(self, d: Detected) -> PoseFrame:
        """A single-frame model on one detection (an empty frame for nobody); per-frame root.
        Temporal models need the frames around it: use `sequence()`."""
        if self.temporal is not None:
            raise UserError("a temporal model lifts sequences: use PoseEstimator.sequence()")
        if not usable(d):
            # nobody, or a detection with unusable 2D: an empty frame in its place, never a crash
            return PoseFrame.empty(d.index, d.timestamp_s, d.image_size, d.timings_ms)
        t0 = time.perf_counter()
        rel, fbi = self.pose_of(d)
        return self.pose_frame(d, rel, fbi, dict(d.timings_ms, lift=(time.perf_counter() - t0) * 1000.0))

    def process(self, frame: Frame) -> PoseFrame:
        return self.lift(self.detect(frame))

    def sequence(self, root: RootFilterConfig | None = None, body: BodyConfig | None = None) -> SequenceLifter:
        """A fresh SequenceLifter (one person's history, body and root filter) on this estimator.
        root: the root filter's settings (lag_s 0 = causal, live; > 0 = smoothed, files), or
        None for the per-frame solve alone (unrelated stills); body: the fixed bone lengths'
        settings (realtime.filters.FILE_BODY, LIVE_BODY), or None for the model's own."""
        return SequenceLifter(self, root, body)
