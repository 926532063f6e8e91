"""Many videos to 3D pose files, scheduled by Ray: `posestream batch` and `run_batch(...)`.

Work units. A video is one Ray task (decode, 2D detection, lifting, writing every requested
format). A video longer than `chunk_frames` is split at multiples of `chunk_frames` into
chunk tasks that run phase 1 in parallel (decoding, MediaPipe 2D, and a single-frame
model's per-frame lifting), and one finishing task per video that runs phase 2 over the
stitched detections (realtime.sequence.lift_sequence: the temporal model and the root
trajectory filter; smoothing) and writes the files. Both phases are the code `posestream
video` runs, so the output is the same:
  * phase 1 is exact per chunk because, for files, MediaPipe's VIDEO-mode tracking restarts
    at every multiple of `realtime.detector.RESTART_FRAMES`, in `posestream video` too
    (realtime.api.open_pose_estimator), and chunks start on those boundaries (a chunk's
    tracker is fresh exactly where a single run's is);
  * phase 2 (whatever carries state across the clip) runs once over the whole stitched
    sequence, so chunks need no overlap.
Seeking in a container can land on the wrong frame: each chunk hashes its first
CHECK_FRAMES frames and the previous chunk hashes the CHECK_FRAMES frames after its end
(decoded straight on); on any difference, or an undecodable frame at a seam, the finishing
task reprocesses the whole video from frame 0 in one pass (noted in the report).

Several people (`--people N`, N > 1): a video is one task (chunk) whatever its length: the
tracker that keeps the people's identities runs over the whole video in phase 1, and phase 2
lifts every track with its own temporal context (realtime.people).

Resources: each task asks Ray for `cpus_per_task` CPUs (MediaPipe and a one-thread ONNX
Runtime lifter), so a local Ray on a 2-core machine runs 2 tasks at once and a cluster runs
as many as it has CPUs; `workers` caps the tasks in flight. The lifter is loaded once per Ray
worker process and reused by the tasks that process runs; MediaPipe's landmarker is created
per chunk (a fresh tracker is the point).

Files. Outputs are DIR/<name>.<format> (<name>: the video's path under a folder given as
INPUT, else its file name without extension), written by realtime.writers' framework (a
journal, then every output rendered under a temporary name and renamed), so a killed run
leaves no part of an output under a final name; a video whose outputs all exist is skipped
(resume by running the same command again; the journal a killed run left is deleted, as the
video is done again from its start). Workers write the files themselves: on a cluster,
inputs and DIR must be on storage every node sees.

Failures. A video that cannot be read (missing, corrupt, truncated before its first frame),
or any other UserError (a bad model, an output in the way), becomes an error row in the
report without retries (the same input fails the same way);
any other exception, or a worker process that dies, is retried `retries` times by Ray
(`max_retries`, `retry_exceptions`), then becomes an error row. Every other video completes.

Report. DIR/report.csv and DIR/report.json, one row per video (VideoRow), rewritten as
videos finish (atomically), so a killed run leaves the rows done so far.

Stopping. Ctrl-C or SIGTERM asks the tasks to stop (through the progress actor, between
frames of detection, before anything is written); a video whose files are being written
finishes them and keeps its row; tasks still running after STOP_WAIT_S are killed and
their journal and temporary files removed; run_batch then raises BatchInterrupted with the
report. A local Ray's processes run in their own process group, so a SIGTERM to the
batch's group reaches the driver only (in the group, the raylet died at once and its
workers went on writing unsupervised).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from engines.artifact import atomic_write_text
from engines.errors import Interrupted, UserError
from realtime.api import Options, default_model
from realtime.frames import PoseFrame

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
# Frames hashed on each side of a chunk seam to check that the seek landed where a straight
# decode gets to (a wrong seek is usually off by a frame or more, so two frames catch it).
CHECK_FRAMES = 2
PROGRESS_EVERY_S = 0.5  # how often a task reports its frame count
POLL_S = 0.5  # how often the driver refreshes the progress bar
REPORT_STEM = "report"
STATUS_DONE, STATUS_SKIPPED, STATUS_ERROR = "done", "skipped", "error"
STOPPED = "stopped"  # what a chunk task returns when the batch was stopped before it finished
RAY_START_ATTEMPTS = 3
STOP_WAIT_S = 8.0  # after Ctrl-C / SIGTERM: how long the videos being written may take to finish
KILL_WAIT_S = 5.0  # then: how long the stopped workers' tasks may take to end
CONNECT_TIMEOUT_S = 5.0  # how long the address given to --address may take to accept a connection
RAY_MISSING = "posestream batch needs Ray: pip install 'posestream[batch]' (or ray==2.60.0)"


# --------------------------------------------------------------------------- options, inputs
@dataclass(frozen=True)
class BatchOptions:
    """How each video is processed and scheduled.

    pose:           the poses' settings (realtime.api.Options, as `posestream video`'s
                    options: model, backend, fov, calib, threads, num_poses, image_mode,
                    people, smoothing); the outputs equal `posestream video`'s with the same settings.
    formats:        output formats, e.g. ("bvh", "npz"): one output per format per video
                    (realtime.writers.FORMATS, without the dot).
    output_options: the formats' own options by suffix, e.g. {".npz": {"landmarks": True}}
                    (realtime.writers.OutputSpec.options).
    chunk_frames:   frames per chunk of a long video; a multiple of restart_frames.
                    None: restart_frames.
    restart_frames: the detector's restart interval; None: realtime.detector.RESTART_FRAMES,
                    which `posestream video` uses (another value gives other 2D).
    cpus_per_task:  CPUs Ray reserves for each task.
    retries:        Ray retries of a task that raised or whose worker died.
    """

    pose: Options = field(default_factory=Options)
    formats: tuple[str, ...] = ("npz",)
    output_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    chunk_frames: int | None = None
    restart_frames: int | None = None
    cpus_per_task: float = 1.0
    retries: int = 2

    @property
    def model(self) -> str:
        return self.pose.model or default_model(live=False)

    def resolved(self) -> "BatchOptions":
        """Defaults filled in and every value checked (UserError on a bad one)."""
        from realtime.detector import RESTART_FRAMES
        from realtime.writers import FORMATS

        known = [suffix.lstrip(".") for suffix in FORMATS]
        formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in self.formats if f.strip()))
        if not formats:
            raise UserError("no output format: give --format, e.g. --format bvh,npz")
        bad = [f for f in formats if f not in known]
        if bad:
            raise UserError(f"unknown format {bad[0]!r}: use one or more of {', '.join(known)}")
        restart = RESTART_FRAMES if self.restart_frames is None else int(self.restart_frames)
        chunk = restart if self.chunk_frames is None else int(self.chunk_frames)
        if restart < 1:
            raise UserError(f"restart_frames must be at least 1, got {restart}")
        if chunk < 1 or chunk % restart:
            raise UserError(f"--chunk-frames must be a positive multiple of {restart} (where the 2D "
                            f"detector restarts, so chunks reproduce a single run), got {chunk}")
        if self.cpus_per_task <= 0:
            raise UserError(f"--cpus-per-task must be positive, got {self.cpus_per_task}")
        if self.retries < 0:
            raise UserError(f"--retries must be 0 or more, got {self.retries}")
        return dataclasses.replace(self, pose=dataclasses.replace(self.pose, model=self.model), formats=formats,
                                   chunk_frames=chunk, restart_frames=restart)


@dataclass(frozen=True)
class VideoJob:
    """One input video. path: absolute. name: output stem relative to the output folder
    (posix). frame_count: from the container's header (None if unknown). chunks: frame
    ranges [start, stop), the last one open-ended (stop None: to the end of the file)."""

    path: str
    name: str
    frame_count: int | None
    chunks: tuple[tuple[int, int | None], ...]

    def outputs(self, out_dir: Path, formats: Sequence[str]) -> list[Path]:
        return [out_dir / f"{self.name}.{fmt}" for fmt in formats]

    def files(self, out_dir: Path, formats: Sequence[str], people: int = 1) -> list[Path] | None:
        """The files its outputs are on disk (several people: one .bvh per person,
        realtime.writers.written_files), or None if any output is missing (not done)."""
        from realtime.writers import written_files

        found = [written_files(p, people) for p in self.outputs(out_dir, formats)]
        return None if not all(found) else [f for files in found for f in files]


def find_videos(inputs: Sequence[str]) -> list[tuple[Path, str]]:
    """(video path, output name) for each INPUT: a file (any extension: the user named it),
    a folder (its videos, recursively, by extension; hidden files skipped; the name keeps
    the path under the folder) or a glob pattern. Raises UserError for an input that
    matches nothing, or two videos that would write the same output name."""
    found: list[tuple[Path, str]] = []
    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            vids = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
            found += [(f, f.relative_to(p).with_suffix("").as_posix()) for f in vids]
        elif p.is_file():
            found.append((p, p.stem))
        elif glob.has_magic(spec):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
            files = [m for m in matches if m.is_file()]
            if not files:
                raise UserError(f"no file matches {spec!r}")
            found += [(m, m.stem) for m in files]
        else:
            raise UserError(f"no such file or folder: {spec}")
    unique: dict[Path, str] = {}
    for path, name in found:
        unique.setdefault(path.resolve(), name)
    by_name: dict[str, Path] = {}
    for path, name in unique.items():
        if name in by_name:
            raise UserError(f"{by_name[name]} and {path} would both write {name}.*: give them in separate "
                            f"runs (or as folders, whose sub-paths keep names apart)")
        by_name[name] = path
    if not unique:
        raise UserError("no videos found in " + ", ".join(inputs) + f" (extensions {', '.join(VIDEO_EXTENSIONS)})")
    return [(path, name) for path, name in unique.items()]


def probe_frame_count(path: Path) -> int | None:
    """The frame count in the container's header, or None (unreadable, or not stated)."""
    import cv2

    from realtime.detector import _quiet_native_stderr

    with _quiet_native_stderr():  # FFmpeg's own complaint about a corrupt file; the task reports it
        cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


def plan_chunks(frame_count: int | None, chunk_frames: int) -> tuple[tuple[int, int | None], ...]:
    """Frame ranges [start, stop) of the chunks, starting at multiples of chunk_frames; the
    last one is open-ended. A remainder shorter than half a chunk joins the chunk before it."""
    if frame_count is None or frame_count <= chunk_frames:
        return ((0, None),)
    starts = list(range(0, frame_count, chunk_frames))
    if frame_count - starts[-1] < chunk_frames // 2:
        starts.pop()
    return tuple((s, e) for s, e in zip(starts, starts[1:])) + ((starts[-1], None),)


# --------------------------------------------------------------------------- report
@dataclass
class VideoRow:
    """One line of the report.

    status: done, skipped (its outputs existed) or error. frames: frames written (one per
    source frame). frames_with_person: frames with a pose. undecodable: frames the decoder
    could not read (written empty). video_fps: the file's frame rate. fps: frames processed
    per second of wall time (first task start to files written). wall_s: that wall time,
    seconds. chunks: tasks the video was split into. model, backend: the lifter and its
    runtime. nodes: Ray node ids (8 hex digits) that ran its tasks. note: e.g. a chunk seam
    that did not verify. error: one line, for status error.
    """

    input: str
    outputs: str
    status: str
    frames: int | None = None
    frames_with_person: int | None = None
    undecodable: int | None = None
    video_fps: float | None = None
    fps: float | None = None
    wall_s: float | None = None
    chunks: int | None = None
    model: str = ""
    backend: str = ""
    nodes: str = ""
    note: str = ""
    error: str = ""


REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(VideoRow))


@dataclass
class BatchReport:
    """What a batch did: one row per input video, in input order, and the report files."""

    rows: list[VideoRow]
    csv_path: Path
    json_path: Path
    wall_s: float = 0.0
    stopped_by: str = ""  # "Ctrl-C" or "SIGTERM" if the run was stopped
    not_done: int = 0  # videos a stopped run left to do (no row: neither started nor finished)

    @property
    def failed(self) -> list[VideoRow]:
        return [r for r in self.rows if r.status == STATUS_ERROR]

    def summary(self) -> str:
        n = {s: sum(r.status == s for r in self.rows) for s in (STATUS_DONE, STATUS_SKIPPED, STATUS_ERROR)}
        frames = sum(r.frames or 0 for r in self.rows if r.status == STATUS_DONE)
        if self.stopped_by:
            skipped = f", {n[STATUS_SKIPPED]} skipped (already done)" if n[STATUS_SKIPPED] else ""
            return (f"stopped ({self.stopped_by}): {n[STATUS_DONE]} done, {n[STATUS_ERROR]} failed, {self.not_done} "
                    f"not done (stopped or not started){skipped}; rerun the same command to resume; "
                    f"report {self.csv_path}")
        return (f"{len(self.rows)} videos: {n[STATUS_DONE]} done, {n[STATUS_SKIPPED]} skipped (already done), "
                f"{n[STATUS_ERROR]} failed; {frames} frames in {self.wall_s:.1f} s; report {self.csv_path}")


class BatchInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped the batch after it finalised what was on disk: `report` is
    what it did (rows of the videos done or failed; report.csv / report.json written)."""

    def __init__(self, signum: int, report: BatchReport) -> None:
        super().__init__(signum)
        self.report = report


def write_report(rows: Sequence[VideoRow], out_dir: Path) -> tuple[Path, Path]:
    """DIR/report.csv and DIR/report.json (each replaced atomically)."""
    csv_path, json_path = out_dir / f"{REPORT_STEM}.csv", out_dir / f"{REPORT_STEM}.json"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in dataclasses.asdict(r).items()})
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps({"videos": [dataclasses.asdict(r) for r in rows]}, indent=1) + "\n")
    return csv_path, json_path


def read_report(out_dir: Path) -> dict[str, VideoRow]:
    """The rows of an earlier DIR/report.json by input path ({} if absent or unreadable)."""
    try:
        data = json.loads((out_dir / f"{REPORT_STEM}.json").read_text())
        return {r["input"]: VideoRow(**{k: r.get(k) for k in REPORT_FIELDS}) for r in data["videos"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _one_line(exc: BaseException) -> str:
    """`Type: first line of the message` of an exception (Ray's wrappers unwrapped)."""
    cause = getattr(exc, "cause", None)
    cause = cause if isinstance(cause, BaseException) else exc
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")


# --------------------------------------------------------------------------- inside the tasks
@dataclass
class ChunkResult:
    """Phase 1 over frames [start, stop) of a video.

    detections: realtime.estimator.Detected of every decoded frame (several people:
    realtime.people.PeopleDetected), in frame order, without pixels (frames the decoder
    could not read are absent; `skipped` lists them). poses: for a single-frame model, the
    lifted pose of each usable detection by (frame index, track id) ((17, 3) mm
    root-relative joints, FBI or None), computed here because the Final model needs the
    frame's pixels. head/tail: {frame index: hash of its pixels, or None if
    undecodable} for the first CHECK_FRAMES frames of the chunk and the CHECK_FRAMES frames
    after it (read but not processed). reached: the last frame index read (-1: none).
    """

    start: int
    stop: int | None
    detections: list[Any] = field(default_factory=list)
    poses: dict[tuple[int, int], tuple[Any, Any]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    head: dict[int, str | None] = field(default_factory=dict)
    tail: dict[int, str | None] = field(default_factory=dict)
    reached: int = -1
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    t_start: float = 0.0
    node: str = ""


# The lifter loaded in this (Ray worker) process, by (model, backend, threads): a worker runs
# many tasks one after another, and loading a model takes seconds.
_LIFTERS: dict[tuple[str, str, int], Any] = {}


def _lifter(pose: Options) -> Any:
    from realtime.estimator import open_lifter

    key = (str(pose.model), pose.backend, pose.threads)
    if key not in _LIFTERS:
        _LIFTERS[key] = open_lifter(str(pose.model), pose.backend, threads=pose.threads)
    return _LIFTERS[key]


def _node_id() -> str:
    try:
        import ray
    except ImportError:
        ray = None
    if ray is None or not ray.is_initialized():  # a direct call, outside Ray (never start one here)
        return socket.gethostname()
    return ray.get_runtime_context().get_node_id()[:8]


class _Stopped(Exception):
    """The batch was stopped (Ctrl-C, SIGTERM): a task ends before writing anything."""


class _Ticker:
    """Reports a task's running frame count to the progress actor every PROGRESS_EVERY_S,
    and raises _Stopped once the driver has asked the tasks to stop: detection stops
    between frames, before any output is written.

    A task never waits on the actor. A task blocked in ray.get gives its CPU back to Ray,
    which then starts more queued tasks than there are CPUs (each holding MediaPipe and a
    lifter), and a dead actor would fail every task. So each tick sends the count without
    waiting and reads the previous tick's reply (the stop flag) only if it has arrived
    (ray.wait, timeout 0); while a reply is outstanding no new one is sent. The stop flag is
    thus seen one tick late (a task that starts after the stop ends within
    PROGRESS_EVERY_S, still before writing). If the actor fails, the task carries on
    without progress reports (the driver still stops the tasks by cancelling them)."""

    def __init__(self, progress: Any, key: str) -> None:
        self.progress, self.key = progress, key
        self.n, self._last = 0, time.monotonic()
        self._reply: Any = None  # the last set() call's reply, not read yet
        self._send(check=True)

    def _send(self, check: bool) -> None:
        if self.progress is None:
            return
        if self._reply is not None and not self._stopped():  # reply not in yet (the actor is behind)
            return
        if self.progress is None:  # the actor failed
            return
        try:
            reply = self.progress.set.remote(self.key, self.n)
        except Exception as exc:  # noqa: BLE001 - the actor is gone: no progress, the task goes on
            log.debug("progress: %s", exc)
            self.progress = None
            return
        self._reply = reply if check else None

    def _stopped(self) -> bool:
        """Reads the outstanding reply if it has arrived (raising _Stopped if it says stop);
        False while it has not."""
        import ray

        try:
            ready, _ = ray.wait([self._reply], timeout=0)
            if not ready:
                return False
            stop = ray.get(self._reply)
        except Exception as exc:  # noqa: BLE001 - the actor died: "not stopped", no more reports
            log.debug("progress: %s", exc)
            self.progress = None
            stop = False
        self._reply = None
        if stop:
            raise _Stopped()
        return True

    def add(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._last = time.monotonic()
            self._send(check=True)

    def close(self) -> None:
        self._reply = None  # the final count is sent whatever the previous reply
        self._send(check=False)


def _frame_hash(image: Any) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()


def detect_chunk(path: str, start: int, stop: int | None, opts: BatchOptions, progress: Any = None,
                 key: str = "") -> ChunkResult:
    """Phase 1 over frames [start, stop) of `path` (stop None: to the end): 2D detection with
    a fresh tracker at `start`, as `posestream video` has there, and a single-frame model's
    per-frame lifting; frames up to CHECK_FRAMES after stop are read and hashed for the seam
    check, not processed."""
    from realtime.api import open_pose_estimator
    from realtime.sequence import usable
    from realtime.sources import VideoFileSource

    out = ChunkResult(start, stop, t_start=time.time(), node=_node_id())
    with VideoFileSource(path, max_frames=None if stop is None else stop + CHECK_FRAMES, start=start) as source:
        ticker = _Ticker(progress, key)  # first: a stopped batch starts nothing (raises _Stopped)
        est = open_pose_estimator(opts.pose, live=False, lifter=_lifter(opts.pose), restart_frames=opts.restart_frames)
        several = opts.pose.people > 1
        core = est.est if several else est  # the PoseEstimator (several people: under the tracker)
        try:
            out.fps, out.size = source.fps, source.size
            for frame in source:
                out.reached = frame.index
                if stop is not None and frame.index >= stop:
                    out.tail[frame.index] = _frame_hash(frame.image)
                    continue
                if frame.index < start + CHECK_FRAMES:
                    out.head[frame.index] = _frame_hash(frame.image)
                d = est.detect(frame)
                people = list(d.people) if several else [d] if usable(d) else []
                if est.temporal is None and people:
                    rel, fbi = core.poses_of(people)
                    out.poses.update(zip(((p.index, p.track_id) for p in people), zip(rel, fbi)))
                out.detections.append(_without_pixels(d))
                ticker.add()
            for i in source.skipped:
                out.reached = max(out.reached, i)
                if stop is not None and i >= stop:
                    out.tail[i] = None
                else:
                    out.skipped.append(i)
                    if i < start + CHECK_FRAMES:
                        out.head[i] = None
        finally:
            core.detector.close()  # the lifter stays loaded for this worker's next task
            ticker.close()
    return out


def seams_ok(chunks: Sequence[ChunkResult]) -> str | None:
    """None if every chunk starts where a straight decode from the chunk before gets to (the
    same pixels on CHECK_FRAMES frames, all decodable) and every chunk but the last reached
    its end; else why not."""
    for prev, cur in zip(chunks, chunks[1:]):
        assert prev.stop == cur.start, (prev.stop, cur.start)
        if prev.reached < cur.start - 1:
            return f"the file ended at frame {prev.reached + 1}, before chunk {cur.start}"
        want = {i: h for i, h in prev.tail.items() if i < cur.start + CHECK_FRAMES}
        got = {i: h for i, h in cur.head.items() if i < cur.start + CHECK_FRAMES}
        if want != got or None in want.values() or len(want) < min(CHECK_FRAMES, prev.reached - cur.start + 1):
            return f"seeking to frame {cur.start} did not give the frames a straight decode gives"
    return None


class _StitchedSource:
    """What `every_frame` needs of a source, for the stitched chunks."""

    def __init__(self, chunks: Sequence[ChunkResult]) -> None:
        self.fps = chunks[0].fps
        self.size = chunks[0].size
        self.skipped = sorted(i for c in chunks for i in c.skipped)


def _without_pixels(d: Any) -> Any:
    """A Detected (or a PeopleDetected's people) without the frame's pixels."""
    if hasattr(d, "people"):
        return dataclasses.replace(d, people=tuple(_without_pixels(p) for p in d.people))
    return dataclasses.replace(d, image=None) if d.image is not None else d


class _PhaseTwo:
    """The estimator phase 2 lifts with: `est` (a realtime.estimator.PoseEstimator), except
    that a single-frame model's poses are the ones phase 1 computed (the pixels the Final
    model needs stayed with the chunks); several people: every track's lifting
    (realtime.people.PeopleSequenceLifter)."""

    def __init__(self, est: Any, poses: Mapping[tuple[int, int], tuple[Any, Any]], several: bool = False) -> None:
        self._est, self._poses, self._several = est, poses, several

    def __getattr__(self, name: str) -> Any:
        return getattr(self._est, name)

    def poses_of(self, people: list) -> tuple[Any, list]:
        import numpy as np

        got = [self._poses[(d.index, d.track_id)] for d in people]
        return np.stack([rel for rel, _ in got]), [fbi for _, fbi in got]

    def pose_of(self, d: Any) -> tuple[Any, Any]:
        return self._poses[(d.index, d.track_id)]

    def sequence(self, root: Any = None, body: Any = None) -> Any:
        from realtime.sequence import SequenceLifter

        if self._several:
            from realtime.people import PeopleSequenceLifter

            return PeopleSequenceLifter(self, root, body=body)
        return SequenceLifter(self, root, body)


def lift_chunks(chunks: Sequence[ChunkResult], opts: BatchOptions) -> Iterator[PoseFrame]:
    """Phase 2 over the stitched chunks, as `posestream video` after its detection: the
    sequence lifting (realtime.sequence.lift_sequence: temporal model, root trajectory
    filter), smoothing if asked for, then one PoseFrame per source frame, in order
    (undecodable frames empty in their place)."""
    from realtime.api import body_filter, every_frame, open_pose_estimator, root_filter
    from realtime.sequence import lift_sequence

    est = open_pose_estimator(opts.pose, live=False, lifter=_lifter(opts.pose), restart_frames=opts.restart_frames)
    several = opts.pose.people > 1
    core = est.est if several else est  # the PoseEstimator (several people: under the tracker)
    try:
        lifter = _PhaseTwo(core, {k: p for c in chunks for k, p in c.poses.items()}, several)
        detections = (d for c in chunks for d in c.detections)
        poses: Iterable[PoseFrame] = lift_sequence(detections, lifter, root_filter(opts.pose, live=False, stills=False),
                                                   body_filter(opts.pose, live=False, stills=False))
        smoother = opts.pose.smoother(live=False)
        if smoother is not None:
            poses = map(smoother, poses)
        yield from every_frame(poses, _StitchedSource(chunks))
    finally:
        core.detector.close()  # the lifter stays loaded for this worker's next task


def write_outputs(poses: Iterable[PoseFrame], finals: Sequence[Path], fps: float, opts: BatchOptions,
                  source: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """Write `poses` to every output in `finals` (format by extension) through the file
    framework (realtime.writers.Recording: a journal, then each output rendered under a
    temporary name and renamed), so a final name never holds part of an output. A journal
    left by a killed batch run is deleted first: the video is being redone from its start.
    On an error nothing is written. Returns (frames, frames with a person)."""
    from realtime.journal import is_locked
    from realtime.writers import OutputSpec, Recording, part_path

    specs = [OutputSpec(f, dict(opts.output_options.get(f.suffix.lower(), {}))) for f in finals]
    for spec in specs:
        leftover = part_path(spec.path)
        if leftover.is_file() and not is_locked(leftover):
            leftover.unlink()
    rec = Recording(specs, fps, source, say=log.info)
    n = n_valid = 0
    try:
        for pose in poses:
            rec.write(pose)
            n += 1
            n_valid += int(pose.valid)
    except BaseException:
        rec.discard()
        raise
    rec.close()
    return n, n_valid


def finish_video(job: VideoJob, out_dir: str, opts: BatchOptions, chunks: Sequence[ChunkResult],
                 progress: Any = None) -> VideoRow:
    """Phase 2 and the files for one video from its chunks (reprocessing it in one pass if a
    seam does not verify); the report row."""
    finals = job.outputs(Path(out_dir), opts.formats)
    t_start = min(c.t_start for c in chunks)
    nodes = dict.fromkeys(c.node for c in chunks)
    n_chunks, note = len(chunks), ""
    why = seams_ok(chunks) if len(chunks) > 1 else None
    if why is not None:
        note = f"{why}: reprocessed in one pass"
        log.warning("%s: %s", job.path, note)
        chunks = [detect_chunk(job.path, 0, None, opts, progress, key=f"{job.name}#whole")]
        nodes[chunks[0].node] = None
    n, n_valid = write_outputs(lift_chunks(chunks, opts), finals, chunks[0].fps, opts,
                               {"kind": "batch", "file": Path(job.path).name,
                                **({"people": opts.pose.people} if opts.pose.people > 1 else {})})
    wall = time.time() - t_start
    written = job.files(Path(out_dir), opts.formats, opts.pose.people) or finals
    return VideoRow(job.path, ";".join(str(f) for f in written), STATUS_DONE, frames=n, frames_with_person=n_valid,
                    undecodable=sum(len(c.skipped) for c in chunks), video_fps=round(chunks[0].fps, 3),
                    fps=round(n / wall, 2) if wall > 0 else None, wall_s=round(wall, 3), chunks=n_chunks,
                    model=str(opts.model), backend=str(getattr(_lifter(opts.pose), "name", opts.pose.backend)),
                    nodes=";".join(nodes), note=note)


def _error_row(job: VideoJob, out_dir: str | Path, opts: BatchOptions, message: str) -> VideoRow:
    return VideoRow(job.path, ";".join(str(p) for p in job.outputs(Path(out_dir), opts.formats)), STATUS_ERROR,
                    chunks=len(job.chunks), model=str(opts.model), error=message)


# The Ray tasks. A UserError (the video cannot be read, a bad model or output) is returned as
# an error, not raised: it fails the same way every time, so Ray must not retry it.
def _video_task(job: VideoJob, out_dir: str, opts: BatchOptions, progress: Any) -> VideoRow:
    """Ray task: a whole video in one task (phase 1 and 2)."""
    try:
        chunk = detect_chunk(job.path, 0, None, opts, progress, key=job.name)
        return finish_video(job, out_dir, opts, [chunk], progress)
    except UserError as exc:
        return _error_row(job, out_dir, opts, str(exc))
    except _Stopped:
        return None


def _chunk_task(job: VideoJob, index: int, opts: BatchOptions, progress: Any) -> tuple[str | None, ChunkResult | None]:
    """Ray task (two returns): a chunk's error (small, for the driver) and its result (for
    the finishing task, never fetched by the driver)."""
    start, stop = job.chunks[index]
    try:
        return None, detect_chunk(job.path, start, stop, opts, progress, key=f"{job.name}#{index}")
    except UserError as exc:
        return str(exc), None
    except _Stopped:
        return STOPPED, None


def _finish_task(job: VideoJob, out_dir: str, opts: BatchOptions, progress: Any, *chunks: ChunkResult) -> VideoRow:
    """Ray task: phase 2 and the files of a chunked video."""
    try:
        return finish_video(job, out_dir, opts, chunks, progress)
    except UserError as exc:
        return _error_row(job, out_dir, opts, str(exc))
    except _Stopped:
        return None


class _Progress:
    """Ray actor: the frame count of every running or finished task, by task key."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}
        self.stopping = False

    def set(self, key: str, n: int) -> bool:
        """Record a task's frame count; True once the tasks are to stop."""
        self.frames[key] = n
        return self.stopping

    def stop(self) -> None:
        self.stopping = True

    def total(self) -> int:
        return sum(self.frames.values())


# --------------------------------------------------------------------------- the driver
def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """UserError unless the Ray at `address` (HOST:PORT, ray://HOST:PORT, or "auto":
    RAY_ADDRESS) accepts a TCP connection within `timeout_s`: Ray itself retries an
    unreachable address for minutes, printing a line per attempt. Only those two forms
    name a socket to probe; the rest are left to ray.init: "auto" without RAY_ADDRESS (Ray
    looks for a cluster `ray start` made on this machine), "local" (Ray starts one here)
    and any other SCHEME:// (a client builder, e.g. anyscale://NAME, resolves it)."""
    target = os.environ.get("RAY_ADDRESS", "").strip() if address == "auto" else address.strip()
    if target in ("", "auto", "local"):
        return
    scheme, sep, rest = target.partition("://")
    if sep:
        if scheme.lower() != "ray":
            return
        target = rest
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"cannot reach Ray at {address} (give HOST:PORT, e.g. 10.0.0.5:6379, or 'auto')")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as conn:
            tls = os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true")
            if not tls and not _answers_http2(conn):
                raise UserError(f"cannot reach Ray at {address} (something listens there, but not a Ray "
                                f"cluster: it does not answer as gRPC)")
    except OSError as exc:
        why = "no answer in %g s" % timeout_s if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise UserError(f"cannot reach Ray at {address} ({why})") from None


def _answers_http2(conn: socket.socket) -> bool:
    """Whether the server on `conn` answers an HTTP/2 client preface with a SETTINGS frame,
    as every gRPC server (Ray's GCS, the Ray Client server) does at once; a port that is
    open but something else would otherwise leave ray.init retrying for minutes. Raises
    socket.timeout if nothing comes within the socket's timeout."""
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    head = b""
    while len(head) < 9:
        chunk = conn.recv(9 - len(head))
        if not chunk:
            return False
        head += chunk
    return head[3] == 0x04  # frame type SETTINGS


def check_resources(cpus_per_task: float, local: bool = True) -> None:
    """If no node of the Ray this process is connected to has `cpus_per_task` CPUs: for a
    local Ray started by this run (`local`), UserError (no node will ever join, so such
    tasks would wait for ever); on a cluster, one warning: an autoscaling cluster (a head
    with no CPUs, workers started on demand) may add such a node, so the tasks wait."""
    import ray

    most = max((float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0)
    if cpus_per_task > most:
        total = float(ray.cluster_resources().get("CPU", 0))
        if local:
            raise UserError(f"--cpus-per-task {cpus_per_task:g} is more than a Ray node has (the largest has "
                            f"{most:g} CPUs, {total:g} in all): no task could ever start")
        log.warning("no Ray node has %g CPUs now (the largest has %g, %g in all): the tasks wait until one "
                    "joins", cpus_per_task, most, total)


def check_pose_options(opts: BatchOptions, local: bool = True) -> None:
    """UserError for a model or backend `posestream video` would refuse, found here before
    any Ray starts (else every video would become the same error row). For a local Ray
    (`local`) the lifter is opened as the tasks open it, and closed. For a cluster only what
    does not depend on the machine is checked (the smoothing settings; the model is a
    shipped one or a model file): the driver may lack the workers' hardware (a CPU-only
    driver of GPU workers cannot open --backend tensorrt, which the workers can)."""
    opts.pose.smoother(live=False)  # bad smoothing settings
    if not local:
        _check_model_name(str(opts.model))
        return
    from realtime.estimator import open_lifter

    lifter = open_lifter(str(opts.model), opts.pose.backend, threads=opts.pose.threads)
    close = getattr(lifter, "close", None)
    if close is not None:
        close()


def _check_model_name(model: str) -> None:
    """UserError unless `model` is a shipped model's name or a model file that exists (as
    realtime.estimator.open_lifter refuses it), without opening it."""
    from realtime.estimator import runnable_models

    try:
        from engines.backends import shipped_models
    except ImportError:  # a torch-only install: open_lifter resolves the checkpoint
        from engines.checkpoint import resolve_model_path

        resolve_model_path(model)
        return
    runs = ", ".join(runnable_models()) or "none shipped"
    path = Path(model).expanduser()
    if path.suffix:
        if not path.is_file():
            raise UserError(f"unknown model {model!r}: no such file; this command runs {runs} "
                            f"(or a .onnx/.pt/.engine of those)")
    elif model not in shipped_models():
        if path.exists():
            raise UserError(f"{model} is not a model checkpoint or ONNX model (a model file ends in .onnx, .pt "
                            f"or .engine); this command runs {runs}")
        raise UserError(f"unknown model {model!r}: not a file, and not a shipped model; this command runs "
                        f"{runs} (or a .onnx/.pt/.engine of those)")


@contextlib.contextmanager
def _own_process_group() -> Iterator[None]:
    """Start a local Ray's processes (GCS, raylet and the agents it starts) in a process
    group of their own. A SIGTERM sent to the batch's process group (`timeout`, a shell's
    job control) then reaches the driver only, which stops the tasks and then Ray; in the
    driver's group the raylet died at once and its workers went on writing unsupervised.
    Ctrl-C already spares them (Ray blocks SIGINT in them); the workers have their own
    groups anyway. Ray kills these processes if the driver dies (Linux fate sharing), so
    nothing outlives it; where Ray has no fate sharing they stay in the driver's group."""
    try:
        from ray._private import services, utils

        original = services.ConsolePopen
        supported = sys.platform != "win32" and utils.detect_fate_sharing_support()
    except (ImportError, AttributeError):  # another Ray version: its own behaviour
        supported = False
    if not supported:
        yield
        return

    class OwnGroupPopen(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnGroupPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def _init_ray(address: str | None, workers: int | None) -> bool:
    """Connect to Ray (or start a local one): True if this call started it. Workers get this
    checkout's code first on their path (a local Ray's workers would otherwise import an
    installed copy): a cluster's through the job's runtime environment, a local Ray's by
    inheriting PYTHONPATH from this process when it starts (so the worker processes Ray
    starts ahead of time serve the tasks; a runtime environment would start new ones)."""
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    if ray.is_initialized():
        return False
    code_root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH", "")) if p)
    kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot reach Ray at {address}: {_one_line(exc)}") from None
        return True
    # On a heavily loaded machine a local Ray's start-up can time out (its raylet gives up
    # waiting for a helper process): that is worth another try. Ray runs its workers 15
    # steps nicer than the driver by default; here the workers do all the work (the driver
    # waits), so a local Ray keeps them at the driver's priority unless RAY_worker_niceness
    # says otherwise: at +15 they yield to everything else on a busy machine.
    before = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_worker_niceness")}
    os.environ["PYTHONPATH"] = pythonpath
    os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            try:
                # "local": a new Ray for this run, never one a `ray start` left behind on this machine.
                with _own_process_group():
                    ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                             **kwargs)
                return True
            except Exception as exc:  # noqa: BLE001 - Ray reports a start-up timeout as a bare Exception
                ray.shutdown()
                if attempt == RAY_START_ATTEMPTS:
                    raise UserError(f"cannot start a local Ray ({attempt} tries): {_one_line(exc)}") from None
                log.warning("a local Ray did not start (%s); trying again", _one_line(exc))
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return True


def _local_ray(address: str | None) -> bool:
    """Whether this run starts a Ray on this machine (no address, or "local", and no Ray
    initialised already): its tasks then run on this machine's hardware."""
    if address not in (None, "", "local"):
        return False
    try:
        import ray
    except ImportError:
        return True  # _init_ray says Ray is missing
    return not ray.is_initialized()


def plan(inputs: Sequence[str], out_dir: Path, opts: BatchOptions) -> tuple[list[VideoJob], list[VideoJob]]:
    """(videos to process, videos whose outputs all exist), in input order."""
    todo, done = [], []
    for path, name in find_videos(inputs):
        n = probe_frame_count(path)
        # several people: one tracker over the whole video keeps their identities, so one chunk
        chunks = plan_chunks(n, int(opts.chunk_frames or 1)) if opts.pose.people == 1 else ((0, None),)
        job = VideoJob(str(path), name, n, chunks)
        (todo if job.files(out_dir, opts.formats, opts.pose.people) is None else done).append(job)
    return todo, done


def run_batch(inputs: Sequence[str], out_dir: str | Path, options: BatchOptions = BatchOptions(), *,
              address: str | None = None, workers: int | None = None, progress: bool = True) -> BatchReport:
    """Process every video of `inputs` (files, folders, globs) into `out_dir`; see the module
    docstring. address: a Ray cluster (None: an already initialised Ray, else a local one
    with `workers` CPUs, default all). workers: at most this many tasks at once. Returns the
    report (also written to out_dir/report.csv and .json). Raises UserError for bad
    arguments or inputs; a bad video only fails its own row."""
    t0 = time.perf_counter()
    opts = options.resolved()
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc}") from None
    todo, done = plan(inputs, out, opts)
    previous = read_report(out)
    rows: dict[str, VideoRow] = {}
    for job in done:
        prev = previous.get(job.path)
        base = prev if prev is not None and prev.status in (STATUS_DONE, STATUS_SKIPPED) else None
        on_disk = ";".join(str(p) for p in job.files(out, opts.formats, opts.pose.people) or [])
        rows[job.path] = dataclasses.replace(base, status=STATUS_SKIPPED, error="", outputs=on_disk) if base else \
            VideoRow(job.path, on_disk, STATUS_SKIPPED, model=str(opts.model))
    order = [j.path for j in sorted(todo + done, key=lambda j: j.name)]

    def report(stopped_by: str = "") -> BatchReport:
        listed = [rows[p] for p in order if p in rows]
        csv_path, json_path = write_report(listed, out)
        return BatchReport(listed, csv_path, json_path, time.perf_counter() - t0, stopped_by,
                           len(order) - len(listed) if stopped_by else 0)

    if todo:
        from realtime.interrupts import DeferredInterrupt

        local = _local_ray(address)
        check_pose_options(opts, local=local)
        if address:
            check_reachable(address)
        import threading

        main = threading.current_thread() is threading.main_thread()
        # saved before ray.init, which sets a SIGTERM handler of its own (one that exits at
        # once, sys.exit, outputs unfinished) before it connects: restored on every way out,
        # a failed init or shutdown included, so an API caller keeps its own
        on_term = signal.getsignal(signal.SIGTERM) if main else None
        started, late_signal = False, None
        try:
            started = _init_ray(address, workers)
            if on_term is not None:
                signal.signal(signal.SIGTERM, on_term)
            check_resources(opts.cpus_per_task, local=local and started)
            # a signal asks the tasks to stop (those writing their files finish them), then
            # the report is written
            with DeferredInterrupt(message=STOP_MESSAGE) as ctrl_c:
                try:
                    _schedule(todo, out, opts, workers, progress, rows, report, ctrl_c)
                except KeyboardInterrupt:  # a second signal: the tasks were killed, their leftovers removed
                    ctrl_c.signum = ctrl_c.signum or signal.SIGINT
        finally:
            try:
                if started:
                    late_signal = _shutdown_ray()
            finally:
                if on_term is not None:
                    signal.signal(signal.SIGTERM, on_term)
        if ctrl_c.requested:
            raise BatchInterrupted(int(ctrl_c.signum), report(ctrl_c.name))
        if late_signal is not None:  # came while Ray shut down, after every video was done
            raise BatchInterrupted(late_signal, report(_signal_name(late_signal)))
    return report()


STOP_MESSAGE = ("stopping: videos being written are finished, the others stopped "
                "({again} again to abort)")


def _signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _shutdown_ray() -> int | None:
    """ray.shutdown(), which one Ctrl-C / SIGTERM does not cut short (Ray's own helper
    processes would be left running), but a second one does: a shutdown can hang (a lost
    connection to a remote cluster). Returns the first signal that came meanwhile (None
    if none), so the run still ends as stopped by it. ray.shutdown() runs in a thread
    while the main thread waits in Python: a signal handler runs only there, and only
    between bytecodes, so a shutdown hung in native code could not otherwise be stopped.
    The second signal restores the default action and acts on it: a SIGTERM is sent
    again (the process ends by it), a Ctrl-C raises KeyboardInterrupt."""
    import threading

    import ray

    if threading.current_thread() is not threading.main_thread():  # no signals here
        ray.shutdown()
        return None
    got: list[int] = []
    saved: dict[int, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        got.append(signum)
        if len(got) == 1:
            print(f"\n{_signal_name(signum)}: stopping Ray first ({_signal_name(signum)} again to abort)",
                  file=sys.stderr, flush=True)
            return
        for sig in saved:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)

    failed: list[BaseException] = []

    def shutdown() -> None:
        try:
            ray.shutdown()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(exc)

    saved.update({sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)})
    try:
        worker = threading.Thread(target=shutdown, name="ray-shutdown", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if failed:
        raise failed[0]
    return got[0] if got else None


def _schedule(jobs: list[VideoJob], out: Path, opts: BatchOptions, workers: int | None, show: bool,
              rows: dict[str, VideoRow], report: Any, ctrl_c: Any = None) -> None:
    """Submit the tasks (at most `workers` in flight), collect the rows, feed the bar. After
    Ctrl-C / SIGTERM (ctrl_c.requested) nothing more is submitted and the tasks are asked
    to stop: a task still detecting ends without writing, one writing its files finishes
    them and its row is kept. Tasks still running after STOP_WAIT_S are cancelled (their
    workers killed) and what they left of their outputs (journal, temporary files) is
    removed, so every output is complete or absent and the report matches the disk."""
    import ray
    from tqdm import tqdm

    task_opts = dict(num_cpus=opts.cpus_per_task, max_retries=opts.retries, retry_exceptions=True)
    video_task = ray.remote(_video_task).options(**task_opts)
    chunk_task = ray.remote(_chunk_task).options(num_returns=2, **task_opts)
    finish_task = ray.remote(_finish_task).options(**task_opts)
    tracker = ray.remote(num_cpus=0)(_Progress).remote()
    out_dir = str(out)

    queue: deque[tuple[VideoJob, int | None]] = deque(
        (job, None) if len(job.chunks) == 1 else (job, i) for job in jobs for i in range(len(job.chunks)))
    chunk_refs: dict[str, list[Any]] = {j.path: [None] * len(j.chunks) for j in jobs if len(j.chunks) > 1}
    chunks_left = {p: len(refs) for p, refs in chunk_refs.items()}
    in_flight: dict[Any, tuple[str, VideoJob]] = {}  # ref -> (what, job); what: video, chunk or finish
    failed: set[str] = set()
    started: dict[str, VideoJob] = {}  # videos with a task submitted
    total = sum(j.frame_count or 0 for j in jobs)
    bar = tqdm(total=total or None, unit="frame", disable=not show, dynamic_ncols=True, smoothing=0.1)
    finished = 0
    stop_by: float | None = None  # monotonic deadline once asked to stop

    def fail(job: VideoJob, message: str) -> None:
        if job.path in failed:
            return
        failed.add(job.path)
        rows[job.path] = _error_row(job, out, opts, message)
        for ref, (what, other) in list(in_flight.items()):
            if other.path == job.path:
                ray.cancel(ref)
                del in_flight[ref]

    def submit(job: VideoJob, index: int | None) -> None:
        if job.path in failed:
            return
        started[job.path] = job
        if index is None:
            in_flight[video_task.remote(job, out_dir, opts, tracker)] = ("video", job)
        else:
            err_ref, res_ref = chunk_task.remote(job, index, opts, tracker)
            chunk_refs[job.path][index] = res_ref
            in_flight[err_ref] = ("chunk", job)

    try:
        while queue or in_flight:
            if ctrl_c is not None and ctrl_c.requested and stop_by is None:
                stop_by = time.monotonic() + STOP_WAIT_S
                queue.clear()
                try:
                    ray.get(tracker.stop.remote(), timeout=KILL_WAIT_S)
                except Exception as exc:  # noqa: BLE001 - the tasks are killed after STOP_WAIT_S anyway
                    log.debug("stop: %s", exc)
            if stop_by is not None and time.monotonic() > stop_by:
                break
            while queue and (workers is None or len(in_flight) < workers):
                submit(*queue.popleft())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
            for ref in ready:
                if ref not in in_flight:
                    continue
                what, job = in_flight.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception as exc:  # the task failed after its retries, or its worker died
                    fail(job, _one_line(exc))
                    finished += 1
                    report()
                    continue
                if value is None if what != "chunk" else value == STOPPED:  # stopped before writing anything
                    continue
                if what == "chunk":
                    if value is not None:  # the video cannot be read
                        fail(job, value)
                        finished += 1
                        report()
                        continue
                    chunks_left[job.path] -= 1
                    if chunks_left[job.path] == 0 and job.path not in failed and stop_by is None:
                        in_flight[finish_task.remote(job, out_dir, opts, tracker, *chunk_refs.pop(job.path))] = \
                            ("finish", job)
                    continue
                rows[job.path] = value
                finished += 1
                report()
            frames = ray.get(tracker.total.remote())
            n_failed = sum(rows[j.path].status == STATUS_ERROR for j in jobs if j.path in rows)
            bar.set_postfix_str(f"videos {finished}/{len(jobs)}" + (f", {n_failed} failed" if n_failed else ""),
                                refresh=False)
            bar.update(max(0, (min(frames, total) if total else frames) - bar.n))
    finally:
        bar.close()
        if stop_by is not None or in_flight:
            _stop_tasks(list(in_flight), [j for p, j in started.items() if p not in rows], out, opts, rows)
            report()


def _stop_tasks(refs: list[Any], unfinished: list[VideoJob], out: Path, opts: BatchOptions,
                rows: dict[str, VideoRow]) -> None:
    """Kill the tasks still running (`refs`) and wait for them (within KILL_WAIT_S); then
    for each video that got no row: outputs all on disk (finished as the run stopped) get a
    row; otherwise what its tasks left (journal, temporary files) is removed."""
    import ray

    from realtime.journal import is_locked
    from realtime.writers import clear_temp, part_path, temp_path

    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # noqa: BLE001 - already finished, or Ray is going away
            log.debug("cancel: %s", exc)
    if refs:
        try:
            ray.wait(refs, num_returns=len(refs), timeout=KILL_WAIT_S)
        except Exception as exc:  # noqa: BLE001
            log.debug("wait: %s", exc)
    for job in unfinished:
        files = job.files(out, opts.formats, opts.pose.people)
        if files is not None:
            rows[job.path] = VideoRow(job.path, ";".join(map(str, files)), STATUS_DONE, chunks=len(job.chunks),
                                      model=str(opts.model), note="finished as the run stopped")
            continue
        for final in job.outputs(out, opts.formats):
            journal = part_path(final)
            try:
                if journal.is_file() and not is_locked(journal):
                    journal.unlink()
                clear_temp(temp_path(final).parent, final.name)
            except OSError as exc:
                log.warning("%s: cannot remove what the stopped task left: %s", final, exc)


def format_options(args: argparse.Namespace | Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The formats' own options by suffix (BatchOptions.output_options) from parsed arguments,
    or from a mapping of those arguments' names (e.g. {"landmarks": True}; the rest keep
    their defaults)."""
    from realtime.writers import FORMATS, add_format_arguments

    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(add_help=False)
        add_format_arguments(parser)
        given = dict(args or {})
        args = parser.parse_args([])  # every option at its default
        unknown = sorted(set(given) - set(vars(args)))
        if unknown:
            raise UserError(f"unknown output option {unknown[0]!r}: the formats take "
                            f"{', '.join(sorted(vars(args))) or 'none'}")
        vars(args).update(given)
    return {suffix: dict(fmt.options(args)) for suffix, fmt in FORMATS.items() if fmt.options is not None}


def batch(inputs: str | Path | Sequence[str | Path], out_dir: str | Path, formats: str | Sequence[str] = ("npz",), *,
          people: int = 1, address: str | None = None, workers: int | None = None, chunk_frames: int | None = None,
          cpus_per_task: float = 1.0, retries: int = 2, progress: bool = True,
          output_options: Mapping[str, Any] | None = None, **options: Any) -> BatchReport:
    """3D pose files for many videos, as `posestream batch` (the public `posestream.batch`).

        report = posestream.batch("clips/", "out/clips", formats="bvh,npz")
        report = posestream.batch(["a.mp4", "takes/*.mov"], "out", address="10.0.0.5:6379")
        for row in report.failed: print(row.input, row.error)

    inputs:   video files, folders (their videos, recursively) or glob patterns.
    out_dir:  DIR/<name>.<format> per video and format, and DIR/report.csv / report.json.
    formats:  "bvh,npz" or ("bvh", "npz"): npz, bvh, json, csv.
    people:   1: one person (the largest/most central); N > 1: up to N people tracked, each
              with their own id (as `posestream video --people N`; a video is then one task).
    address:  a Ray cluster; None: the Ray this process already initialised, else a local
              one with `workers` CPUs (default all).
    workers:  at most this many tasks at once.
    chunk_frames, cpus_per_task, retries: see BatchOptions.
    output_options: the formats' options by argument name, e.g. {"landmarks": True}.
    options:  realtime.api.Options fields (model, backend, fov, calib, threads, image_mode,
              smooth, smoothing), as for posestream.Estimator.
    Returns the BatchReport (rows in input-name order). Raises UserError for bad arguments
    or inputs; a video that fails only fails its own row."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if isinstance(formats, str):
        formats = formats.split(",")
    opts = BatchOptions(pose=Options(**{"people": people, **options}), formats=tuple(formats),
                        output_options=format_options(output_options), chunk_frames=chunk_frames,
                        cpus_per_task=cpus_per_task, retries=retries)
    return run_batch([str(i) for i in inputs], out_dir, opts, address=address, workers=workers, progress=progress)


class LocalRayNodes:
    """A Ray cluster of `nodes` nodes with `cpus` CPUs each, all on this machine: the way the
    tests and scripts/bench_batch.py try `--address` without a second machine. Each node is a
    `ray start --block` process started here and stopped (terminated, so Ray tears down what
    it started) when the `with` block ends. The nodes are given 127.0.0.1, and the cluster
    requires a token only this object knows (RAY_AUTH_MODE=token): Ray 2.60 still listens on
    all interfaces and registers the machine's own address, so the token is what keeps other
    hosts out. `env` is what a driver needs to connect (pass it to a subprocess); `address`
    is HOST:PORT for `posestream batch --address`."""

    def __init__(self, nodes: int = 2, cpus: int = 1, start_timeout_s: float = 120.0) -> None:
        import secrets
        import shutil

        if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
            raise UserError(RAY_MISSING)
        self.n, self.cpus, self.timeout = int(nodes), int(cpus), float(start_timeout_s)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        code_root = str(Path(__file__).resolve().parents[1])
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH"))
                                                                 if p),
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0",
                        RAY_worker_niceness=os.environ.get("RAY_worker_niceness", "0"))  # as _init_ray's local Ray
        self.env.pop("RAY_ADDRESS", None)
        # Its own short temp folder (Ray's socket paths have a length limit), so the cluster
        # never becomes the one a plain `ray.init()` on this machine would join.
        self.temp_dir = Path("/tmp") / f"posestream-ray-{secrets.token_hex(3)}"
        self._procs: list[Any] = []

    def __enter__(self) -> "LocalRayNodes":
        import subprocess

        ray_bin = str(Path(sys.executable).parent / "ray")
        common = ["--block", f"--num-cpus={self.cpus}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        try:
            for i in range(self.n):
                where = ([f"--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"]
                         if i == 0 else [f"--address={self.address}"])
                self._procs.append(subprocess.Popen([ray_bin, "start", *where, *common], env=self.env,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                self._wait_for(i + 1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_for(self, alive: int) -> None:
        import subprocess

        probe = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.monotonic() + self.timeout
        while True:
            if any(p.poll() is not None for p in self._procs):
                raise RuntimeError("a `ray start` process exited while the local cluster was starting")
            try:
                got = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True,
                                     timeout=max(1.0, deadline - time.monotonic())).stdout.strip()
            except subprocess.TimeoutExpired:
                got = ""
            if got == str(alive):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Ray cluster did not reach {alive} nodes in {self.timeout:.0f} s")
            time.sleep(1.0)

    def __exit__(self, *exc: object) -> None:
        import shutil
        import subprocess

        for p in reversed(self._procs):
            p.terminate()
        for p in reversed(self._procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
