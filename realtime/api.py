"""The Python API behind `posestream.Estimator` and `posestream.write` (docs/api.md).

One object holds the settings (the `Options` dataclass, as MediaPipe Tasks' options) and runs
them on anything that gives images (as ultralytics' one model object):

    est = Estimator(model=None, backend="auto", fov=None, calib=None)   # None: the defaults
    pose = est.process(image_rgb, timestamp_s)    # one frame now: a PoseFrame
    for pose in est.stream("clip.mp4"): ...       # a video, image folder, camera index or
                                                  # iterator of (image, timestamp) pairs
    write(poses, "clip.bvh")                      # .npz / .json / .csv / .bvh

`posestream video` and `posestream webcam` are thin layers over `Estimator.stream`: the
options' defaults are the commands' defaults, and a stream gives the poses the command
writes (files: one per source frame, in order, frames without a person or undecodable ones
as empty poses; live sources: the newest frame wins and frames the pipeline cannot keep up
with are dropped). The work is done by the pieces the commands use: realtime.sources
(inputs), realtime.estimator.PoseEstimator (MediaPipe 2D -> lifter -> root trajectory),
realtime.pipeline (threads), realtime.filters (smoothing), realtime.writers (files).
Never needs torch (the shipped models run on ONNX Runtime).
"""
from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from engines.errors import UserError
from realtime.filters import FILE_BODY, LIVE_BODY, BodyConfig, PoseSmoother, SmootherConfig
from realtime.frames import Frame, PoseFrame
from realtime.pipeline import Pipeline, Stage, StageGroup, StreamStage, run_inline
from realtime.trajectory import FILE_ROOT_LAG_S, RootFilterConfig

log = logging.getLogger(__name__)

QUEUE_SIZE = 4  # file mode, threads overlapping: queues between them (back-pressure, nothing dropped)
# Frames a file's detection may run ahead of the caller besides those the lifter holds back:
# the queue after detection, the lift thread's frame and the output queue.
FILE_SLACK_FRAMES = 3 * QUEUE_SIZE + 4
DEFAULT_FPS = 30.0  # frame rate assumed for image folders and iterators of images


def default_model(live: bool = False, stills: bool = False) -> str:
    """The shipped model used when none is named: the centred temporal model for a file
    (live=False), the causal one for a live source, the single-frame model for unrelated
    stills (each falls back to the single-frame default until shipped). The one place the
    commands and the API take it from."""
    from engines.checkpoint import default_app_model, default_file_model, default_live_model

    if stills:
        return default_app_model()
    return default_live_model() if live else default_file_model()


@dataclass(frozen=True)
class Options:
    """Everything that shapes the poses. The commands' defaults are these fields' defaults.

    model:      shipped model name or .onnx/.pt/.engine path; None = `default_model(live)`.
    backend:    "auto" (TensorRT if usable, else ONNX Runtime, else torch), "onnxruntime",
                "tensorrt" or "torch".
    fov:        horizontal field of view of the camera in degrees; None = 60.
    calib:      camera intrinsics JSON {"fx", "fy", "cx", "cy"} in pixels (overrides fov).
    threads:    CPU threads for the lifter runtime (a batch-1 lifter needs one; more steal
                CPU from MediaPipe).
    num_poses:  people MediaPipe looks for; one is kept and tracked (realtime.detector).
    image_mode: run MediaPipe's person detector on every frame instead of tracking.
    people:     1 = one person (the fields above); N > 1 = up to N people, each found on
                every frame (IMAGE mode, num_poses = N), kept under a stable track id,
                lifted in one batch and smoothed on their own (realtime.people): every
                PoseFrame then carries the others in `others`.
    fast_people: with people > 1, the people apart from everyone else are found by
                MediaPipe's landmark model alone, all in one call per frame
                (realtime.landmark_runner): about twice the frame rate at 2 people, with
                identities somewhat less stable (docs/multiperson.md).
    smooth:     One Euro + bone-length smoothing: None = on for live sources, off for files
                (files are for accuracy); True/False force it.
    smoothing:  the filter's settings when it is on.
    sequence:   an image folder holds consecutive frames of one video (tracked and lifted as
                a video); False = unrelated stills (MediaPipe's IMAGE mode on each, the
                single-frame model, no trajectory).
    root_filter: the root trajectory filter over time (realtime.trajectory.RootTrajectory:
                smoothed for files, causal live); False = each frame's own root solve.
    fixed_bones: each track keeps one body: its bone lengths, estimated from its own poses,
                and every pose rebuilt with them along its own bone directions
                (realtime.filters.TrackBody; the root trajectory is not touched). None = on
                for files (the median of the track's first two seconds, then fixed), off for
                live sources (their default smoothing steadies bones causally); True = on
                for live sources too (a causal running median); False = off.
    mirror_2d:  files: MediaPipe also runs on the horizontally mirrored frames and the two 2D
                poses are averaged (realtime.detector, `mirror`): more accurate 2D, so 3D, for
                a second MediaPipe run per frame, made beside the first (a second core keeps
                most of the frame rate; one core takes twice the time) and a second landmarker
                in memory. One person only; refused for live sources and for files paced in
                real time (it would lower their frame rate); unrelated stills keep their own
                search (turned views) without it.
    """

    model: str | None = None
    backend: str = "auto"
    fov: float | None = None
    calib: str | Path | None = None
    threads: int = 1
    num_poses: int = 1
    image_mode: bool = False
    people: int = 1
    fast_people: bool = False
    smooth: bool | None = None
    smoothing: SmootherConfig = field(default_factory=SmootherConfig)
    sequence: bool = False
    root_filter: bool = True
    fixed_bones: bool | None = None
    mirror_2d: bool = False

    def __post_init__(self) -> None:
        """Bad settings fail here, before any camera, file or model is opened."""
        from realtime.trajectory import intrinsics_for

        for name in ("threads", "num_poses", "people"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise UserError(f"{name} must be a whole number, got {value!r}")
        if self.fov is not None:
            try:
                float(self.fov)
            except (TypeError, ValueError):
                raise UserError(f"fov (--fov) must be a number of degrees, got {self.fov!r}") from None
        if self.threads < 0 or self.num_poses < 1 or self.people < 1:
            raise UserError(f"threads must be >= 0, num_poses and people >= 1, got {self.threads}, "
                            f"{self.num_poses} and {self.people}")
        if self.fast_people and self.people < 2:
            raise UserError("fast_people (--fast-people) needs several people (--people N, N > 1)")
        if self.mirror_2d and self.people > 1:
            raise UserError("mirror_2d (--mirror-2d) follows one person: it cannot be combined with --people N > 1")
        intrinsics_for((640, 480), self.fov, self.calib)  # bad fov / unreadable calib file

    def smoother(self, live: bool) -> Callable[[PoseFrame], PoseFrame] | None:
        """The smoothing stage, or None when off: one PoseSmoother, or with several people
        one per track id (realtime.people.PerTrack)."""
        on = live if self.smooth is None else self.smooth
        if not on:
            return None
        try:
            PoseSmoother(self.smoothing)  # bad settings fail now
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if self.people > 1:
            from realtime.people import PerTrack

            return PerTrack(partial(PoseSmoother, self.smoothing))
        return PoseSmoother(self.smoothing)


def as_rgb_image(image: Any) -> np.ndarray:
    """`image` checked as an (H, W, 3) uint8 RGB array (C-contiguous); ValueError otherwise."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def check_timestamp(t: Any, previous: float | None = None, what: str = "timestamp_s") -> float:
    """`t` as seconds: TypeError unless a real number, ValueError if not finite or earlier
    than `previous` (frames form a stream: MediaPipe tracks, the lifter reads the frames
    around each one, in time order; an equal time is accepted)."""
    if isinstance(t, (bool, str, bytes)):
        raise TypeError(f"{what} must be a number of seconds, got {type(t).__name__}")
    try:
        t = float(t)  # any real number: numpy scalars and 0-d arrays too
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number of seconds, got {type(t).__name__}") from None
    if not math.isfinite(t):
        raise ValueError(f"{what} must be a finite number of seconds, got {t}")
    if previous is not None and t < previous:
        raise ValueError(f"{what} must not go back in time: {t} s after {previous} s")
    return t


class PairSource:
    """Frames from an iterable of (image, timestamp_s) pairs (or of `Frame`s): the API's
    "bring your own images" source. Images are (H, W, 3) uint8 RGB; timestamps in seconds."""

    def __init__(self, items: Iterable[Any], fps: float = DEFAULT_FPS) -> None:
        self.items = items
        self.fps = float(fps)
        self.skipped: list[int] = []
        self.frame_count = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Frame]:
        last = None
        for i, item in enumerate(self.items):
            if isinstance(item, Frame):
                yield item
                continue
            try:
                image, t = item
            except (TypeError, ValueError):
                raise ValueError(f"item {i}: expected an (image, timestamp_s) pair, got {type(item).__name__}") from None
            last = check_timestamp(t, last, f"item {i}: timestamp_s")
            yield Frame(i, last, as_rgb_image(image))

    def __enter__(self) -> "PairSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        close = getattr(self.items, "close", None)
        if callable(close):
            close()


def _is_camera(source: Any) -> bool:
    return isinstance(source, int) or (isinstance(source, str) and (source.isdigit() or source.startswith("/dev/video")))


def open_input(source: Any, live: bool, max_frames: int | None = None, fps: float = DEFAULT_FPS) -> Any:
    """A frame source for `stream`: a camera index or /dev/video path (webcam), a folder
    (its images), a video file (decoded in full, or played in real time as a camera when
    live), an already opened source (anything iterable with an `fps`, e.g. from
    realtime.sources), or an iterable of (image, timestamp_s) pairs."""
    from realtime.sources import WebcamSource, open_source

    if _is_camera(source):
        device = int(source) if isinstance(source, int) or str(source).isdigit() else str(source)
        return WebcamSource(device, max_frames=max_frames)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if live and path.is_file():
            from realtime.playback import RealtimePlayback

            return RealtimePlayback.from_video(path, max_frames=max_frames)
        return open_source(str(path), max_frames=max_frames, fps=fps)
    if hasattr(source, "fps") and hasattr(source, "__iter__"):
        return source
    if hasattr(source, "__iter__"):
        return PairSource(source, fps)
    raise TypeError(f"cannot stream from {type(source).__name__}: give a path, a camera index, "
                    f"or an iterable of (image, timestamp_s) pairs")


def every_frame(poses: Iterable[PoseFrame], source: Any) -> Iterator[PoseFrame]:
    """One PoseFrame per source frame, in order: frames the decoder skipped come out empty
    in their place (and undecodable frames at the end after the last pose)."""
    size = getattr(source, "size", (0, 0))
    fps = getattr(source, "fps", DEFAULT_FPS)
    n = 0
    for pose in poses:
        while n < pose.index:
            yield PoseFrame.empty(n, n / fps, size)
            n += 1
        size = pose.image_size
        yield pose
        n += 1
    for i in getattr(source, "skipped", ()):  # trailing undecodable frames
        if i >= n:
            yield PoseFrame.empty(i, i / fps, size)
            n += 1


class StoppableInput:
    """`frames` until `stop()`: the frames read before it still go through every stage (the
    lifter flushes what it holds, as at the end of a file). `stop()` only sets a flag, so a
    signal handler may call it."""

    def __init__(self, frames: Iterable[Frame]) -> None:
        self.frames = frames
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def __iter__(self) -> Iterator[Frame]:
        it = iter(self.frames)
        while not self.stopped:
            try:
                frame = next(it)
            except StopIteration:
                return
            yield frame

    def close(self) -> None:
        close = getattr(self.frames, "close", None)
        if callable(close):
            close()


def paced(frames: Iterable[Frame], fps: float) -> Iterator[Frame]:
    """`frames` released at their own timestamps on the wall clock. A slower consumer only
    delays them: nothing is dropped, and the schedule restarts after a stall."""
    from realtime.playback import Pacer

    pacer = Pacer(late_s=1.0 / fps)
    for frame in frames:
        pacer.wait(frame.timestamp_s)
        yield frame


def pipeline_steps(estimator: Any, smoother: Callable[[PoseFrame], PoseFrame] | None = None, tap: Any = None,
                   root: RootFilterConfig | None = RootFilterConfig(), body: BodyConfig | None = None
                   ) -> list[StageGroup]:
    """detect in one thread; the lifting of the sequence (temporal model, body, root
    trajectory: realtime.sequence.SequenceLifter, which may answer a frame after later ones
    arrived) and smoothing in the next. `estimator` is a realtime.estimator.PoseEstimator (or
    a fake with `detect(Frame)` and `sequence(root, body)`); root: the root filter (default
    causal, for live use; files pass a lag; None = each frame's own root solve); body: the
    fixed bone lengths (body_filter; None = the model's own)."""
    detect = estimator.detect if tap is None else tap.wrap(estimator.detect)
    lifter = estimator.sequence(root, body)
    lift: tuple[Stage | StreamStage, ...] = (StreamStage("lift", lifter.push, lifter.flush),)
    if smoother is not None:
        lift += (Stage("smooth", smoother),)
    return [Stage("detect", detect), lift]


def root_filter(options: "Options", live: bool, stills: bool) -> RootFilterConfig | None:
    """The root trajectory filter of a stream: smoothed over a second of context for files,
    causal for live (and paced) sources, none for unrelated stills or when turned off."""
    if stills or not options.root_filter:
        return None
    return RootFilterConfig() if live else RootFilterConfig(lag_s=FILE_ROOT_LAG_S)


def body_filter(options: "Options", live: bool, stills: bool) -> BodyConfig | None:
    """The fixed bone lengths of a stream's tracks (Options.fixed_bones): for files each
    track's body from its first two seconds, then fixed; causal when live, if asked for;
    none for unrelated stills (no track) or when turned off."""
    on = not live if options.fixed_bones is None else options.fixed_bones
    if stills or not on:
        return None
    return LIVE_BODY if live else FILE_BODY


def open_pose_estimator(options: Options, live: bool, stills: bool = False, realtime: bool = False,
                        lifter: Any = None, restart_frames: int | None = None) -> Any:
    """The realtime.estimator.PoseEstimator of a stream: a live source (the causal default model, no
    re-detection: it would add a frame's latency), a file (the centred default model, the
    causal one when paced in real time; a frame where the tracker lost the person is
    searched again) or unrelated stills (IMAGE mode on each, searched again on turned views
    around the person, the single-frame default model; a temporal one is refused). `lifter`:
    an already opened lifter to use (kept open if refused). Files restart MediaPipe's tracking at every multiple of `restart_frames`
    (None: realtime.detector.RESTART_FRAMES), so any stretch of a file that starts at such a
    frame gets the same 2D on its own as in a run over the whole file (posestream batch
    splits long videos there); live sources and stills never restart."""
    from realtime import detector
    from realtime.estimator import PoseEstimator, open_lifter
    from realtime.history import TemporalSpec

    o = options
    if o.mirror_2d and (live or realtime):
        raise UserError("mirror_2d (--mirror-2d) is for files processed as fast as they go: it would lower "
                        "the frame rate of a live or real-time stream")
    if o.mirror_2d and stills:
        log.warning("--mirror-2d does not apply to unrelated still images (each is searched on turned views "
                    "instead); a folder of video frames takes it with --sequence")
    model = o.model or default_model(live or realtime, stills)
    own = lifter is None
    lifter = open_lifter(model, o.backend, o.threads) if own else lifter
    if stills and TemporalSpec.from_metadata(getattr(lifter, "metadata", {})) is not None:
        if own:
            lifter.close()
        raise UserError(f"{model} is a temporal model: it needs a video, not unrelated images "
                        f"(a folder of consecutive frames: sequence=True, --sequence)")
    if o.people > 1:  # several people: MediaPipe in IMAGE mode on every frame, nothing to restart
        from realtime.people import open_people

        return open_people(model, o.backend, o.fov, o.calib, o.people, o.threads, lifter=lifter, own_lifter=own,
                           batched=o.fast_people)
    restart = None if live or stills else (detector.RESTART_FRAMES if restart_frames is None else restart_frames)
    return PoseEstimator(model, o.backend, o.fov, o.calib, lifter=lifter,
                         detector_mode="image" if o.image_mode or stills else "video", num_poses=o.num_poses,
                         threads=o.threads, redetect=not live, restart_frames=restart, views=stills,
                         mirror=o.mirror_2d and not stills)


class PoseStream:
    """The poses of one source, from `Estimator.stream`: iterate it (once) for PoseFrames;
    use it as a context manager, or call `close()`, to release the source, the threads and
    the models early. Attributes: `fps` (the source's frame rate), `frame_count` (None when
    unknown), `skipped` (frame indices the decoder could not read: they come out as empty
    poses), `live`, `backend_name` (the lifter's runtime), `stats` (a
    realtime.pipeline.PipelineStats: frames processed and dropped, latency) when threads run,
    `hold_frames` (how many frames after its image was read a pose may come out: a centred
    model, the body and the root filter wait for later frames; the tap, if any, keeps that
    many images)."""

    def __init__(self, source: Any, estimator: Any, smoother: Callable[[PoseFrame], PoseFrame] | None, *, live: bool,
                 realtime: bool = False, overlap: bool = False, tap: Any = None,
                 stall_timeout_s: float | None = None, root: RootFilterConfig | None = None,
                 body: BodyConfig | None = None) -> None:
        self.source = source
        self.estimator = estimator
        self.live = live
        self.fps = float(getattr(source, "fps", DEFAULT_FPS))
        self.frame_count: int | None = getattr(source, "frame_count", None)
        self.backend_name = str(getattr(estimator, "backend_name", "?"))
        describe = getattr(estimator, "describe", None)
        self.lifting = describe() if callable(describe) else "lifter"  # which lifting runs, for the user
        from realtime.sequence import hold_s

        held = hold_s(getattr(estimator, "temporal", None), root, body)
        self.hold_frames = int(np.ceil(held * self.fps)) + (0 if live else FILE_SLACK_FRAMES)
        if tap is not None:
            tap.hold(self.hold_frames)
        steps = pipeline_steps(estimator, smoother, tap, root, body)
        frames: Iterable[Frame] = paced(source, self.fps) if realtime and not live else source
        self._input = None if live else StoppableInput(frames)  # stop_input()
        frames = self._input or frames
        self.pipeline = (Pipeline(frames, steps, live=live, queue_size=QUEUE_SIZE, stall_timeout_s=stall_timeout_s)
                         if live or overlap else None)
        poses = self.pipeline if self.pipeline is not None else run_inline(frames, steps)
        self._poses = poses if live else every_frame(poses, source)
        self._closed = False

    @property
    def skipped(self) -> list[int]:
        return list(getattr(self.source, "skipped", ()))

    @property
    def stats(self) -> Any:
        return self.pipeline.stats if self.pipeline is not None else None

    def __iter__(self) -> Iterator[PoseFrame]:
        try:
            yield from self._poses
        finally:
            self.close()

    def stop_input(self) -> None:
        """Files: read no further frame; the iteration still gives the poses of the frames
        already read (the lifter flushes what it holds back, as at the end of the file), then
        ends. Only sets a flag: safe from a signal handler (the commands' Ctrl-C)."""
        if self._input is not None:
            self._input.stop()

    def __enter__(self) -> "PoseStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.pipeline is not None:
                self.pipeline.close()
            close = getattr(self._poses, "close", None)
            if callable(close):
                close()
        finally:
            try:
                self.estimator.close()
            finally:
                close = getattr(self.source, "close", None)
                if callable(close):
                    close()


class Estimator:
    """3D human pose from images: MediaPipe 2D, then a lifter (ONNX Runtime / TensorRT).

        est = Estimator()                         # or Estimator(model="base_gt", fov=70)
        pose = est.process(image_rgb, 0.033)      # -> PoseFrame
        for pose in est.stream("clip.mp4"): ...

    Arguments are the fields of `Options` (model, backend, fov, calib first). `process` keeps
    one MediaPipe tracker across calls (timestamps must increase, as from a camera); each
    `stream` gets its own. Close the estimator (or use it as a context manager) when done.
    Bad settings (unknown model, bad fov or calib file) raise engines.errors.UserError when
    the models are opened: at the first `process`, or when `stream` is called.
    """

    def __init__(self, model: str | None = None, backend: str = "auto", fov: float | None = None,
                 calib: str | Path | None = None, **options: Any) -> None:
        self.options = Options(model, backend, fov, calib, **options)
        self._frame_estimator: Any = None
        self._frame_lifter: Any = None
        self._frame_smoother: Callable[[PoseFrame], PoseFrame] | None = None
        self._next_index = 0
        self._last_timestamp_s: float | None = None

    @classmethod
    def from_options(cls, options: Options) -> "Estimator":
        return cls(**{f.name: getattr(options, f.name) for f in fields(options)})

    def _open(self, live: bool, stills: bool = False, realtime: bool = False) -> Any:
        """The PoseEstimator of a stream (open_pose_estimator)."""
        return open_pose_estimator(self.options, live, stills, realtime)

    def process(self, image_rgb: np.ndarray, timestamp_s: float) -> PoseFrame:
        """The pose in one image (H, W, 3) uint8 RGB, taken at `timestamp_s` seconds. Calls
        form a stream (MediaPipe tracks the person from the previous call; a causal temporal
        model reads the 2D of the previous calls), so timestamps must increase; the result is
        final at once (live semantics: the causal default model, causal root filter,
        smoothing as `live`). A centred temporal model is refused here: it needs later frames.
        TypeError / ValueError for a timestamp that is not a finite number of seconds or that
        goes back before the previous call's."""
        image = as_rgb_image(image_rgb)
        t = check_timestamp(timestamp_s, self._last_timestamp_s)
        if self._frame_estimator is None:
            est = self._open(live=True)
            if est.temporal is not None and not est.temporal.causal:
                est.close()
                raise UserError("process() answers each frame at once: it needs a causal temporal or a "
                                "single-frame model (stream() runs centred ones)")
            self._frame_estimator = est
            self._frame_lifter = est.sequence(root_filter(self.options, live=True, stills=False),
                                              body_filter(self.options, live=True, stills=False))
            self._frame_smoother = self.options.smoother(live=True)
        est = self._frame_estimator
        (pose,) = self._frame_lifter.push(est.detect(Frame(self._next_index, t, image)))
        self._next_index += 1
        self._last_timestamp_s = t
        return self._frame_smoother(pose) if self._frame_smoother is not None else pose

    def stream(self, source: Any, live: bool | None = None, *, realtime: bool = False, max_frames: int | None = None,
               fps: float = DEFAULT_FPS, overlap: bool = False, tap: Any = None,
               stall_timeout_s: float | None = None) -> PoseStream:
        """The poses of `source`, as `posestream video` (files) or `posestream webcam` (live).

        source:     a video file, an image folder, a camera index (0, 1, ...) or /dev/videoN,
                    an opened realtime.sources source, or an iterable of (image, timestamp_s).
        live:       None = True for cameras, else False. Live: the newest frame wins (frames
                    are dropped when processing falls behind) and a video file plays in real
                    time as a camera. Not live: every frame, in order.
        realtime:   (files) release frames at their own frame rate, still none dropped.
        max_frames: stop after this many source frames.
        fps:        frame rate of an image folder or an iterable of images.
        overlap:    (files) detect and lift in separate threads (the CLI does while it also
                    serves a viewer); the poses are the same.
        tap:        None, or a realtime.thumbnails.ImageTap: it keeps the images of the frames
                    whose poses have not come out yet (`tap.get(pose.index)`), to draw on them
                    (the commands' preview video and viewer thumbnails); the stream sizes it to
                    the frames its lifter holds back. TypeError for anything else.
        stall_timeout_s: (live) give up when no pose came out for this long.
        The source and the models are opened now (bad input raises here); the stream
        closes them when it ends."""
        if max_frames is not None and max_frames < 1:
            raise UserError("max_frames must be at least 1")
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
            raise UserError(f"fps must be a finite number of frames per second > 0, got {fps!r}")
        from realtime.sources import ImageFolderSource
        from realtime.thumbnails import ImageTap

        if tap is not None and not isinstance(tap, ImageTap):
            raise TypeError(f"tap must be a realtime.thumbnails.ImageTap or None, got {type(tap).__name__}")

        live = _is_camera(source) if live is None else bool(live)
        smoother = self.options.smoother(live)
        src = open_input(source, live, max_frames, fps)
        stills = isinstance(src, ImageFolderSource) and not self.options.sequence
        try:
            # a file paced in real time is lifted as live (causal: what a viewer sees as it plays)
            estimator = self._open(live, stills, realtime)
        except BaseException:
            close = getattr(src, "close", None)
            if callable(close):
                close()
            raise
        return PoseStream(src, estimator, smoother, live=live, realtime=realtime, overlap=overlap, tap=tap,
                          stall_timeout_s=stall_timeout_s, root=root_filter(self.options, live or realtime, stills),
                          body=body_filter(self.options, live or realtime, stills))

    def close(self) -> None:
        if self._frame_estimator is not None:
            self._frame_estimator.close()
            self._frame_estimator = self._frame_lifter = None

    def __enter__(self) -> "Estimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write(frames: Iterable[PoseFrame], path: str | Path, fps: float = DEFAULT_FPS) -> Path:
    """Write poses to `path`; the format follows the extension (.npz, .json, .csv, .bvh, as
    realtime.writers). `fps` is the frame rate recorded in the file (a .bvh takes its frame
    time from the poses' timestamps, and `fps` only when they cannot tell). The
    file is finalised even if `frames` raises part-way (every pose written so far is kept).
    Returns the path. No poses at all is a ValueError and nothing is written (an existing file
    stays as it was), as a run's outputs are not written without a frame; a frame where
    nobody was found is a pose too (PoseFrame.empty), as `posestream video` writes them."""
    from realtime.writers import open_writer

    path = Path(path)
    writer = open_writer(path, fps)
    try:
        for pose in frames:
            writer.write(pose)
    finally:
        writer.close()
    if writer.written == 0:
        raise ValueError(f"no poses to write to {path}: nothing was written "
                         f"(a frame without a person is PoseFrame.empty(index, time_s, image_size))")
    return path


def read(path: str | Path) -> list[PoseFrame]:
    """The poses of a .npz written by posestream (realtime.writers.read_pose_npz)."""
    from realtime.writers import read_pose_npz

    return read_pose_npz(path)
