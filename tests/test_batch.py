"""`posestream batch` (realtime/batch.py): inputs, chunk plans, the detector's restarts at
fixed frame boundaries, seam checks, atomic outputs, chunked output == `posestream video`
output, and whole runs on a local Ray with 2 CPUs (a corrupt file, a re-run, a resumed run).
Slow: a clip longer than the real restart interval, and two Ray nodes started with `ray start`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import posestream

from engines.errors import UserError
from realtime import batch as B
from realtime.api import Options, default_model
from realtime.cli import main
from realtime.detector import DEFAULT_MODEL
from realtime.estimator import PoseEstimator
from realtime.frames import Frame
from realtime.sources import VideoFileSource

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "assets" / "demo.mp4"
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "media" / "videos"
MODEL = "base_gt"  # the small 2D-only lifter: these tests are about orchestration, not accuracy
TEMPORAL = "temporal_sh"  # a centred temporal lifter (its accuracy on MediaPipe 2D does not matter here)
RESTART = 10  # a small restart interval, so a 30-frame clip makes 3 chunks
needs_mediapipe_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(),
                                           reason=f"{DEFAULT_MODEL} missing: run scripts/build_mediapipe_model.py")


def write_clip(path: Path, frames: int, source: Path = DEMO, fourcc: str = "mp4v") -> Path:
    """The first `frames` frames of `source` (looped if shorter) re-encoded into `path`."""
    cap = cv2.VideoCapture(str(source))
    images = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
    cap.release()
    h, w = images[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (w, h))
    for i in range(frames):
        out.write(images[i % len(images)])
    out.release()
    return path


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def assert_same_poses(a: Path, b: Path, tol_mm: float = 1e-3) -> None:
    """Same frames, same validity, joints and translation within tol_mm, 2D within 1e-3 px."""
    x, y = npz_arrays(a), npz_arrays(b)
    assert x["index"].tolist() == y["index"].tolist()
    assert x["valid"].tolist() == y["valid"].tolist()
    assert np.array_equal(x["timestamps_s"], y["timestamps_s"])
    for key, tol in (("joints_mm", tol_mm), ("translation_mm", tol_mm), ("joints_2d_px", 1e-3)):
        assert np.array_equal(np.isnan(x[key]), np.isnan(y[key])), key
        ok = ~np.isnan(x[key])
        assert np.abs(x[key][ok] - y[key][ok]).max(initial=0.0) <= tol, key


# --------------------------------------------------------------------------- inputs and plans
def test_find_videos_folders_files_globs(tmp_path: Path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("a.mp4", "sub/b.AVI", "notes.txt", ".hidden.mp4", "sub/.cache/c.mp4"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(b"x")
    (tmp_path / "d.mov").write_bytes(b"x")
    (tmp_path / "e.data").write_bytes(b"x")
    found = B.find_videos([str(tmp_path / "in"), str(tmp_path / "d.mov"), str(tmp_path / "e.*"),
                           str(tmp_path / "in" / "a.mp4")])  # a.mp4 twice: listed once
    assert [(p.name, name) for p, name in found] == [("a.mp4", "a"), ("b.AVI", "sub/b"), ("d.mov", "d"),
                                                     ("e.data", "e")]
    with pytest.raises(UserError, match="no such file or folder"):
        B.find_videos([str(tmp_path / "missing.mp4")])
    with pytest.raises(UserError, match="no file matches"):
        B.find_videos([str(tmp_path / "*.mkv")])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.mp4").write_bytes(b"x")
    with pytest.raises(UserError, match="would both write a"):
        B.find_videos([str(tmp_path / "in" / "a.mp4"), str(tmp_path / "other" / "a.mp4")])


def test_plan_chunks():
    assert B.plan_chunks(None, 10) == ((0, None),)
    assert B.plan_chunks(10, 10) == ((0, None),)
    assert B.plan_chunks(30, 10) == ((0, 10), (10, 20), (20, None))
    assert B.plan_chunks(34, 10) == ((0, 10), (10, 20), (20, None))  # 4 left over: joins the last chunk
    assert B.plan_chunks(35, 10) == ((0, 10), (10, 20), (20, 30), (30, None))


def test_options_are_checked():
    opts = B.BatchOptions(formats=("BVH", ".npz", "bvh"), restart_frames=10, chunk_frames=20).resolved()
    assert opts.formats == ("bvh", "npz") and opts.chunk_frames == 20 and opts.pose.model == default_model()
    for bad, match in ((dict(formats=("mp4",)), "unknown format"), (dict(formats=()), "no output format"),
                       (dict(restart_frames=10, chunk_frames=15), "multiple of 10"),
                       (dict(cpus_per_task=0), "--cpus-per-task"), (dict(retries=-1), "--retries")):
        with pytest.raises(UserError, match=match):
            B.BatchOptions(**bad).resolved()


# --------------------------------------------------------------------------- the shared detection path
class _CountingDetector:
    """Stands in for PoseDetector: records before which frames it was restarted; finds nobody."""

    def __init__(self) -> None:
        self.restarted_before: list[int] = []
        self._pending = False

    def detect(self, image, timestamp_s):
        if self._pending:
            self.restarted_before.append(int(round(timestamp_s * 30)))
            self._pending = False
        return None

    def restart(self) -> None:
        self._pending = True

    def close(self) -> None:
        pass


class _NoLifter:
    name = "none"

    def close(self) -> None:
        pass


@pytest.mark.parametrize("interval, indices, restarts", [
    (10, range(0, 25), [10, 20]),
    (5, [0, 1, 2, 3, 5, 6, 7], [5]),  # frame 4 undecodable: the restart comes before frame 5
    (5, [0, 1, 2, 3, 6, 7], [6]),
    (10, range(10, 20), []),  # a chunk starting on a boundary: its detector is already fresh
    (10, range(8, 12), [10]),
])
def test_detector_restarts_at_fixed_frame_boundaries(interval, indices, restarts):
    det = _CountingDetector()
    est = PoseEstimator(detector=det, lifter=_NoLifter(), restart_frames=interval)
    image = np.zeros((8, 8, 3), np.uint8)
    for i in indices:
        est.detect(Frame(i, i / 30, image))
    assert det.restarted_before == restarts
    live = _CountingDetector()
    est = PoseEstimator(detector=live, lifter=_NoLifter())  # live sources: never restarted
    for i in indices:
        est.detect(Frame(i, i / 30, image))
    assert live.restarted_before == []


def _hashes(source: VideoFileSource) -> dict[int, str]:
    with source:
        return {f.index: hashlib.blake2b(f.image.tobytes()).hexdigest() for f in source}


def test_source_start_seeks_to_the_frame_a_straight_decode_reaches():
    straight = _hashes(VideoFileSource(DEMO))
    chunk = _hashes(VideoFileSource(DEMO, start=40, max_frames=46))
    assert list(chunk) == list(range(40, 46)) and all(chunk[i] == straight[i] for i in chunk)


def test_seam_check():
    def chunk(start, stop, head, tail, reached):
        return B.ChunkResult(start, stop, head=head, tail=tail, reached=reached)

    good = [chunk(0, 10, {0: "a", 1: "b"}, {10: "k", 11: "l"}, 11), chunk(10, None, {10: "k", 11: "l"}, {}, 29)]
    assert B.seams_ok(good) is None
    wrong = [good[0], chunk(10, None, {10: "l", 11: "m"}, {}, 29)]
    assert "seeking to frame 10" in B.seams_ok(wrong)
    undecodable = [chunk(0, 10, {0: "a"}, {10: None, 11: "l"}, 11), chunk(10, None, {10: None, 11: "l"}, {}, 29)]
    assert B.seams_ok(undecodable) is not None
    short = [chunk(0, 10, {0: "a"}, {}, 7), chunk(10, None, {}, {}, -1)]
    assert "ended at frame 8" in B.seams_ok(short)


def test_outputs_go_through_the_file_framework(tmp_path: Path):
    from realtime.frames import PoseFrame

    finals = [tmp_path / "sub" / "clip.npz", tmp_path / "sub" / "clip.bvh", tmp_path / "sub" / "clip.csv"]
    opts = B.BatchOptions(output_options=B.format_options({"landmarks": True})).resolved()

    def poses(fail_at: int | None):
        for i in range(5):
            if i == fail_at:
                raise RuntimeError("killed")
            yield PoseFrame.empty(i, i / 30, (64, 48))

    with pytest.raises(RuntimeError):
        B.write_outputs(poses(3), finals, 30.0, opts)
    assert list((tmp_path / "sub").iterdir()) == []  # no output, no journal, no temporary left
    assert B.write_outputs(poses(None), finals, 30.0, opts) == (5, 0)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["clip.bvh", "clip.csv", "clip.npz"]
    arrays = npz_arrays(finals[0])
    assert arrays["index"].tolist() == [0, 1, 2, 3, 4] and arrays["landmarks_px"].shape == (5, 33, 2)


def test_format_options():
    assert B.format_options({"landmarks": True})[".npz"] == {"landmarks": True}
    assert B.format_options(None)[".json"] == {"landmarks": False}
    with pytest.raises(UserError, match="unknown output option 'colour'"):
        B.format_options({"colour": 1})


# --------------------------------------------------------------------------- chunked == single run
@pytest.fixture(scope="module")
def clip30(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "walk30.mp4", 30)


@pytest.fixture(scope="module")
def single_run(clip30: Path, tmp_path_factory) -> Path:
    """`posestream video` on clip30, with the detector restarting every RESTART frames."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"{DEFAULT_MODEL} missing")
    out = tmp_path_factory.mktemp("single") / "walk30.npz"
    mp = pytest.MonkeyPatch()
    mp.setattr("realtime.detector.RESTART_FRAMES", RESTART)
    try:
        assert main(["video", str(clip30), "--out", str(out), "--model", MODEL, "--no-progress"]) == 0
    finally:
        mp.undo()
    return out


def _options(**kw) -> B.BatchOptions:
    return B.BatchOptions(**{"pose": Options(model=MODEL), "formats": ("npz", "bvh"), "restart_frames": RESTART,
                             "chunk_frames": RESTART, **kw}).resolved()


@needs_mediapipe_model
def test_chunks_stitched_equal_a_single_run(clip30: Path, single_run: Path, tmp_path: Path):
    opts = _options()
    job = B.VideoJob(str(clip30), "walk30", 30, B.plan_chunks(30, RESTART))
    assert len(job.chunks) == 3
    chunks = [B.detect_chunk(job.path, s, e, opts) for s, e in job.chunks]
    assert [c.detections[0].index for c in chunks] == [0, 10, 20]
    row = B.finish_video(job, str(tmp_path), opts, chunks)
    assert row.status == "done" and row.note == "" and row.frames == 30 and row.chunks == 3, row
    assert_same_poses(tmp_path / "walk30.npz", single_run)


@needs_mediapipe_model
def test_a_temporal_model_lifts_the_stitched_chunks_once(clip30: Path, tmp_path: Path, monkeypatch):
    """A centred temporal model and the root filter see the whole stitched sequence (no
    overlap between chunks), as in a single run."""
    monkeypatch.setattr("realtime.detector.RESTART_FRAMES", RESTART)
    single = tmp_path / "single.npz"
    assert main(["video", str(clip30), "--out", str(single), "--model", TEMPORAL, "--no-progress"]) == 0
    opts = _options(pose=Options(model=TEMPORAL))
    job = B.VideoJob(str(clip30), "walk30", 30, B.plan_chunks(30, RESTART))
    chunks = [B.detect_chunk(job.path, s, e, opts) for s, e in job.chunks]
    assert not any(c.poses for c in chunks)  # a temporal model lifts in phase 2 only
    row = B.finish_video(job, str(tmp_path), opts, chunks)
    assert row.status == "done" and row.chunks == 3
    assert_same_poses(tmp_path / "walk30.npz", single)


def stitched_against_single(clip30: Path, tmp_path: Path, flag: str, pose: Options) -> tuple[object, Path]:
    """`posestream video clip30 --model MODEL FLAG` run whole, and the batch's three chunks of
    clip30 with `pose` stitched (detector restarting every RESTART frames: monkeypatch it
    first): (the batch row, the single run's .npz); the stitched .npz is tmp_path/walk30.npz."""
    single = tmp_path / "single.npz"
    assert main(["video", str(clip30), "--out", str(single), "--model", MODEL, flag, "--no-progress"]) == 0
    opts = _options(pose=pose)
    job = B.VideoJob(str(clip30), "walk30", 30, B.plan_chunks(30, RESTART))
    row = B.finish_video(job, str(tmp_path), opts, [B.detect_chunk(job.path, s, e, opts) for s, e in job.chunks])
    return row, single


@needs_mediapipe_model
def test_smoothing_runs_once_over_the_stitched_chunks(clip30: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("realtime.detector.RESTART_FRAMES", RESTART)
    row, single = stitched_against_single(clip30, tmp_path, "--smooth", Options(model=MODEL, smooth=True))
    assert row.status == "done" and row.chunks == 3
    assert_same_poses(tmp_path / "walk30.npz", single)


@needs_mediapipe_model
def test_mirrored_2d_chunks_stitched_equal_a_single_run(clip30: Path, single_run: Path, tmp_path: Path, monkeypatch):
    """--mirror-2d: the mirrored pass restarts with the tracker at the chunk boundaries, so
    chunks give a single run's poses; and its 2D is not the plain run's."""
    monkeypatch.setattr("realtime.detector.RESTART_FRAMES", RESTART)
    row, single = stitched_against_single(clip30, tmp_path, "--mirror-2d", Options(model=MODEL, mirror_2d=True))
    assert row.status == "done" and row.chunks == 3 and row.note == "", row
    assert_same_poses(tmp_path / "walk30.npz", single)
    mirrored, plain = npz_arrays(single)["joints_2d_px"], npz_arrays(single_run)["joints_2d_px"]
    assert np.isfinite(mirrored).all() and np.abs(mirrored - plain).max() > 0.01


@needs_mediapipe_model
def test_a_seam_that_does_not_verify_is_reprocessed_in_one_pass(clip30: Path, single_run: Path, tmp_path: Path):
    opts = _options()
    job = B.VideoJob(str(clip30), "walk30", 30, ((0, 10), (10, None)))
    first = B.detect_chunk(job.path, 0, 10, opts)
    # A seek that landed one frame late: the second chunk starts with the pixels of frame 11.
    late = B.detect_chunk(job.path, 11, None, opts)
    late = dataclasses.replace(late, start=10, head={i - 1: h for i, h in late.head.items()})
    row = B.finish_video(job, str(tmp_path), opts, [first, late])
    assert row.status == "done" and "reprocessed in one pass" in row.note
    assert_same_poses(tmp_path / "walk30.npz", single_run)


# --------------------------------------------------------------------------- on Ray (2 CPUs)
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    started = B._init_ray(None, 2)
    yield ray
    if started:
        ray.shutdown()


def test_local_ray_workers_run_at_the_drivers_priority(local_ray):
    """Ray starts its workers 15 steps nicer than the driver by default: on a busy machine
    the batch's tasks would then yield to everything else."""
    niceness = local_ray.remote(lambda: os.nice(0))  # a lambda travels by value (tests/ is not on the workers' path)
    assert local_ray.get(niceness.remote(), timeout=120) == os.nice(0)
    assert "RAY_worker_niceness" not in os.environ  # set only while the local Ray started


# A process that dies while writing: it leaves its journal, as a killed batch task would.
KILLED_WRITER = """
import os, sys
from realtime.frames import PoseFrame
from realtime.writers import Recording
rec = Recording(sys.argv[1:], 30.0)
for i in range(3):
    rec.write(PoseFrame.empty(i, i / 30, (640, 360)))
os._exit(9)
"""


@pytest.fixture
def collection(tmp_path: Path, clip30: Path) -> Path:
    """A folder of videos: a 30-frame clip (3 chunks), a 5-frame clip, random bytes named
    .mp4 and a real .mp4 cut in half (its index is at the end: unreadable)."""
    d = tmp_path / "videos"
    (d / "more").mkdir(parents=True)
    (d / "walk30.mp4").write_bytes(clip30.read_bytes())
    write_clip(d / "more" / "short.mp4", 5)
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    data = DEMO.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return d


@needs_mediapipe_model
def test_batch_on_ray_isolates_failures_and_resumes(local_ray, collection: Path, single_run: Path, tmp_path: Path,
                                                    capsys):
    out = tmp_path / "out"
    opts = B.BatchOptions(Options(model=MODEL), ("bvh", "npz"), restart_frames=RESTART, chunk_frames=RESTART)
    report = B.run_batch([str(collection)], out, opts, workers=2, progress=True)
    rows = {Path(r.input).name: r for r in report.rows}
    assert set(rows) == {"walk30.mp4", "short.mp4", "corrupt.mp4", "truncated.mp4"}
    assert {n: r.status for n, r in rows.items()} == {"walk30.mp4": "done", "short.mp4": "done",
                                                     "corrupt.mp4": "error", "truncated.mp4": "error"}
    assert "cannot decode" in rows["corrupt.mp4"].error and "\n" not in rows["corrupt.mp4"].error
    walk, short = rows["walk30.mp4"], rows["short.mp4"]
    assert (walk.frames, walk.chunks, walk.frames_with_person, walk.note) == (30, 3, 30, "")
    assert (short.frames, short.chunks) == (5, 1)
    assert walk.model == MODEL and walk.backend and walk.wall_s > 0 and walk.fps > 0 and walk.nodes
    assert_same_poses(out / "walk30.npz", single_run)  # chunks on Ray == one `posestream video` run
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["more/short.bvh", "more/short.npz", "report.csv", "report.json", "walk30.bvh", "walk30.npz"]
    on_disk = json.loads((out / "report.json").read_text())["videos"]
    assert [dataclasses.asdict(r) for r in report.rows] == on_disk
    assert (out / "report.csv").read_text().count("\n") == 5
    assert "videos 4/4" in capsys.readouterr().err  # the progress bar

    # Again: finished videos are skipped (their files untouched), the broken ones fail again.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    again = {Path(r.input).name: r for r in posestream.batch(collection, out, "bvh,npz", model=MODEL,
                                                               progress=False).rows}
    assert {n: r.status for n, r in again.items()} == {"walk30.mp4": "skipped", "short.mp4": "skipped",
                                                      "corrupt.mp4": "error", "truncated.mp4": "error"}
    assert again["walk30.mp4"].frames == 30  # carried over from the first report
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == mtimes

    # A run killed while walk30's outputs were being written (its journal left behind, the
    # .bvh not renamed yet): only walk30 is done again, from its start.
    (out / "walk30.bvh").unlink()
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out / "walk30.bvh"), str(out / "walk30.npz")],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert killed.returncode == 9 and (out / "walk30.bvh.part").is_file(), killed.stderr
    third = {Path(r.input).name: r.status for r in B.run_batch([str(collection)], out, opts, progress=False).rows}
    assert third["walk30.mp4"] == "done" and third["short.mp4"] == "skipped"
    assert not list(out.glob("*.part")) and not list(out.glob("*recovered*")) and not list(out.glob("*.tmp"))
    assert_same_poses(out / "walk30.npz", single_run)


@needs_mediapipe_model
def test_a_task_that_raises_is_retried_then_reported(local_ray, tmp_path: Path):
    """A failure that is not the input's fault (here a file where the output's temporary
    folder goes: OSError inside the writers, not a UserError) is retried by Ray, then
    reported; the other video completes."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_clip(videos / "a.mp4", 3)
    write_clip(videos / "b.mp4", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.npz.tmp").write_text("in the way")
    report = B.run_batch([str(videos)], out, B.BatchOptions(Options(model=MODEL), retries=1), progress=False)
    rows = {Path(r.input).name: r for r in report.rows}
    assert rows["a.mp4"].status == "done" and (out / "a.npz").is_file()
    assert rows["b.mp4"].status == "error" and "b.npz.tmp" in rows["b.mp4"].error and "\n" not in rows["b.mp4"].error
    assert not (out / "b.npz").exists()


def test_cli_refuses_bad_arguments_in_one_line(tmp_path: Path, capsys):
    assert main(["batch", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "o")]) == 2
    assert main(["batch", str(DEMO), "--out-dir", str(tmp_path / "o"), "--format", "gif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such file or folder" in err[0] and "unknown format" in err[1]


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
@needs_mediapipe_model
def test_long_clip_on_ray_equals_posestream_video(local_ray, tmp_path: Path):
    """The real restart interval and default model: a clip of 2.2 intervals makes 2 chunks."""
    from realtime.detector import RESTART_FRAMES

    n = RESTART_FRAMES * 2 + RESTART_FRAMES // 5
    clip = write_clip(tmp_path / "long.mp4", n)
    single = tmp_path / "single.npz"
    assert main(["video", str(clip), "--out", str(single), "--no-progress"]) == 0
    report = B.run_batch([str(clip)], tmp_path / "out", B.BatchOptions(formats=("npz",)), progress=False)
    (row,) = report.rows
    assert (row.status, row.frames, row.chunks, row.note) == ("done", n, 2, "")
    assert_same_poses(tmp_path / "out" / "long.npz", single)


@pytest.mark.slow
@needs_mediapipe_model
def test_two_ray_nodes_share_the_videos(tmp_path: Path):
    """Two Ray nodes with 1 CPU each, started with `ray start` by LocalRayNodes (on
    127.0.0.1, with a token only it knows) and stopped by it; `posestream batch --address`
    fans the videos out over both."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        write_clip(videos / f"clip{i}.mp4", 20)
    out = tmp_path / "out"
    with B.LocalRayNodes(nodes=2, cpus=1) as cluster:
        run = subprocess.run([sys.executable, "-m", "realtime.cli", "batch", str(videos), "--out-dir", str(out),
                              "--model", MODEL, "--address", cluster.address, "--no-progress"],
                             env=cluster.env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert not cluster.temp_dir.exists()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = json.loads((out / "report.json").read_text())["videos"]
    assert [r["status"] for r in rows] == ["done"] * 4
    assert len({r["nodes"] for r in rows}) == 2, rows  # both nodes ran videos


def test_cli_refuses_an_unreachable_address_at_once(tmp_path: Path, capsys):
    """Ray itself retries an unreachable address for minutes; the batch checks it first."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", "nosuchhost.invalid:6379", "no-port"):
        assert main(["batch", str(DEMO), "--out-dir", str(tmp_path / "o"), "--address", address,
                     "--model", MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("posestream batch: error: cannot reach Ray at ") for line in err)
    assert f"127.0.0.1:{port} (" in err[0] and "nosuchhost.invalid:6379 (" in err[1]


def test_cli_refuses_an_unknown_model_before_starting_ray(tmp_path: Path, capsys, monkeypatch):
    def no_ray(*a, **k):
        raise AssertionError("Ray started")

    monkeypatch.setattr(B, "_init_ray", no_ray)
    assert main(["batch", str(DEMO), "--out-dir", str(tmp_path / "o"), "--model", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("posestream batch: error: unknown model 'nosuch'")
    assert not (tmp_path / "o" / "report.csv").exists()


def test_more_cpus_per_task_than_a_node_has_is_refused(local_ray, tmp_path: Path, monkeypatch):
    """By a local Ray this run started (here: the fixture's, as if this run had started it)."""
    monkeypatch.setattr(B, "_local_ray", lambda address: True)
    monkeypatch.setattr(B, "_init_ray", lambda *a: True)
    monkeypatch.setattr(B, "_shutdown_ray", lambda: None)  # the fixture's Ray stays up
    opts = B.BatchOptions(Options(model=MODEL), cpus_per_task=1000)
    with pytest.raises(UserError, match=r"--cpus-per-task 1000 is more than a Ray node has"):
        B.run_batch([str(DEMO)], tmp_path / "o", opts, progress=False)


def test_several_people_bvh_done_and_reported_by_its_per_person_files(tmp_path: Path):
    """With several people a .bvh output is one file per person (clip.person0.bvh): that is
    what resume looks for and what the report lists."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    write_clip(videos / "clip.mp4", 3)
    out.mkdir()
    opts = B.BatchOptions(Options(model=MODEL, people=2), ("bvh", "npz")).resolved()
    (out / "clip.npz").write_bytes(b"x")
    (out / "clip.person0.bvh").write_bytes(b"x")
    todo, done = B.plan([str(videos)], out, opts)
    assert not todo and [j.name for j in done] == ["clip"]
    assert done[0].files(out, opts.formats, 2) == [out / "clip.person0.bvh", out / "clip.npz"]
    report = B.run_batch([str(videos)], out, opts, progress=False)  # nothing to do: no Ray
    assert report.rows[0].status == "skipped"
    assert report.rows[0].outputs == f"{out / 'clip.person0.bvh'};{out / 'clip.npz'}"
    (out / "clip.person0.bvh").unlink()
    assert [j.name for j in B.plan([str(videos)], out, opts)[0]] == ["clip"]


@needs_mediapipe_model
@pytest.mark.skipif(not (SHARED_VIDEOS / "mmpose_demo.mp4").is_file(), reason="shared two-person clip missing")
def test_video_names_the_per_person_files_it_wrote(tmp_path: Path, capsys):
    out = tmp_path / "one_v.bvh"
    assert main(["video", str(SHARED_VIDEOS / "mmpose_demo.mp4"), "--people", "2", "--out", str(out),
                 "--model", MODEL, "--no-progress"]) == 0
    said = capsys.readouterr().out
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written and all(n.startswith("one_v.person") for n in written)
    assert f"wrote {tmp_path / written[0]}" in said and f"{out}:" not in said


def _stop_a_running_batch(tmp_path: Path, sig: int, twice: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    """`posestream batch` on 6 copies of the demo clip in a process group of its own, sent
    `sig` (as `timeout` or a terminal sends it: to the whole group) once the first video is
    in the report; returns the finished process and the output folder."""
    import signal as signals
    import time

    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for i in range(6):
        (videos / f"d{i}.mp4").write_bytes(DEMO.read_bytes())
    code = "import sys; from realtime.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "batch", str(videos), "--out-dir", str(out), "--model", MODEL,
                             "--workers", "2", "--no-progress"], cwd=REPO, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "report.csv").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, sig)
        if twice:
            time.sleep(0.3)
            os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out


def _assert_outputs_match_the_report(out: Path) -> None:
    import time

    rows = json.loads((out / "report.json").read_text())["videos"]
    files = sorted(p.name for p in out.iterdir() if p.name not in ("report.csv", "report.json"))
    assert files == sorted(Path(r["outputs"]).name for r in rows)  # no journal, no temporary file, no row lost
    assert all(r["status"] == "done" and r["frames"] == 103 for r in rows)
    for name in files:
        assert len(npz_arrays(out / name)["valid"]) == 103
    time.sleep(3)  # nothing goes on writing once the command has exited
    assert sorted(p.name for p in out.iterdir() if p.name not in ("report.csv", "report.json")) == files


@needs_mediapipe_model
def test_sigterm_to_the_process_group_stops_the_batch_cleanly(tmp_path: Path):
    """SIGTERM to the batch's process group (`timeout`, systemd, `docker stop`): the tasks
    stop, the videos being written finish, exit 143 with a one-line summary, no crash dump
    of Ray's, every output complete or absent and in the report."""
    import signal as signals

    done, out = _stop_a_running_batch(tmp_path, signals.SIGTERM)
    assert done.returncode == 143, done.stderr
    assert "SIGTERM received" not in done.stderr and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped (SIGTERM): ") and "not done" in last and "rerun the same command" in last
    _assert_outputs_match_the_report(out)


@pytest.mark.slow
@needs_mediapipe_model
def test_two_ctrl_c_abort_the_batch_and_leave_no_part_output(tmp_path: Path):
    import signal as signals

    done, out = _stop_a_running_batch(tmp_path, signals.SIGINT, twice=True)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("stopped (Ctrl-C): ")
    _assert_outputs_match_the_report(out)


def test_a_stopped_video_leaves_no_part_of_its_outputs(tmp_path: Path):
    """What a task killed as the batch stopped left (its journal, a temporary output) is
    removed; a video whose outputs all got written as it stopped gets its row."""
    opts = B.BatchOptions(Options(model=MODEL), ("npz", "bvh")).resolved()
    killed, finished = B.VideoJob("/v/a.mp4", "a", 3, ((0, None),)), B.VideoJob("/v/b.mp4", "b", 3, ((0, None),))
    (tmp_path / "a.npz.part").write_bytes(b"journal")
    (tmp_path / "a.bvh.tmp").mkdir()
    (tmp_path / "a.bvh.tmp" / "a.bvh").write_text("half")
    (tmp_path / "b.npz").write_bytes(b"x")
    (tmp_path / "b.bvh").write_text("x")
    rows: dict = {}
    B._stop_tasks([], [killed, finished], tmp_path, opts, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bvh", "b.npz"]
    assert list(rows) == ["/v/b.mp4"] and rows["/v/b.mp4"].status == "done"
    assert rows["/v/b.mp4"].outputs == f"{tmp_path / 'b.npz'};{tmp_path / 'b.bvh'}"


def test_an_address_that_is_not_ray_is_refused_and_ray_is_accepted(local_ray):
    """A port that is open but not a gRPC server (here one that greets as SSH does) is
    refused at once; ray.init would retry it for minutes. A Ray GCS passes."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def greet() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            conn.recv(64)

    threading.Thread(target=greet, daemon=True).start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    with server, pytest.raises(UserError, match=rf"cannot reach Ray at {address} \(.*not a Ray cluster"):
        B.check_reachable(address, timeout_s=5)
    B.check_reachable(local_ray._private.worker.global_worker.node.gcs_address, timeout_s=5)


def test_api_refuses_bad_smoothing_before_starting_ray(tmp_path: Path, monkeypatch):
    from realtime.filters import SmootherConfig

    monkeypatch.setattr(B, "_init_ray", lambda *a, **k: pytest.fail("Ray started"))
    with pytest.raises(UserError):
        posestream.batch(str(DEMO), tmp_path / "o", model=MODEL, smooth=True,
                         smoothing=SmootherConfig(min_cutoff=-1.0), progress=False)


class _FakeProgress:
    """A progress actor handle whose set.remote() returns the refs it is given."""

    def __init__(self, replies):
        self.replies, self.sent = list(replies), []
        self.set = self

    def remote(self, key, n):
        self.sent.append(n)
        return self.replies.pop(0)


def test_ticker_never_blocks_on_the_progress_actor(monkeypatch):
    """A task must not wait on the progress actor (Ray would give its CPU away and start
    more tasks than CPUs): the stop flag is read only once its reply is in (ray.wait,
    timeout 0), one tick late; a dead actor means 'not stopped' and no more reports."""
    import ray

    arrived: set = set()
    values = {"r1": False, "r2": False, "r3": True, "dead": RuntimeError("actor died")}

    def wait(refs, timeout=None, **k):
        assert timeout == 0, "a task waited on the progress actor"
        return [r for r in refs if r in arrived], [r for r in refs if r not in arrived]

    def get(ref, **k):
        assert ref in arrived, "ray.get on a reply not in yet would block"
        if isinstance(values[ref], Exception):
            raise values[ref]
        return values[ref]

    monkeypatch.setattr(ray, "wait", wait)
    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(B, "PROGRESS_EVERY_S", 0.0)
    progress = _FakeProgress(["r1", "r2", "r3", "r4"])
    ticker = B._Ticker(progress, "k")  # sends r1, does not wait for it
    ticker.add()  # r1 not in: nothing sent, nothing raised
    assert progress.sent == [0]
    arrived.add("r1")
    ticker.add()  # r1 in (not stopped): r2 sent
    assert progress.sent == [0, 2]
    arrived.update({"r2", "r3"})
    ticker.add()  # r2 read, r3 sent
    with pytest.raises(B._Stopped):
        ticker.add()  # r3 says stop
    dead = _FakeProgress(["dead", "never"])
    ticker = B._Ticker(dead, "k")
    arrived.add("dead")
    ticker.add()  # the actor's error: carry on, without progress
    ticker.add()
    ticker.close()
    assert dead.sent == [0] and ticker.progress is None


def test_only_host_port_addresses_are_probed(monkeypatch):
    """`--address local` (Ray starts one here), `auto` without RAY_ADDRESS and a client
    builder's SCHEME://NAME are Ray's to resolve, not a socket to probe; HOST:PORT and
    ray://HOST:PORT are probed (here: refused, nothing listens)."""
    probed = []

    def connect(addr, timeout=None):
        probed.append(addr)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(B.socket, "create_connection", connect)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for address in ("local", "auto", "anyscale://my-cluster", "ANYSCALE://x/y"):
        B.check_reachable(address)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    B.check_reachable("auto")
    assert probed == []
    for address in ("10.0.0.5:6379", "ray://10.0.0.5:10001", "RAY://10.0.0.5:10001/"):
        with pytest.raises(UserError, match=r"cannot reach Ray at .*Connection refused"):
            B.check_reachable(address)
    monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.6:10001")
    with pytest.raises(UserError, match=r"cannot reach Ray at auto"):
        B.check_reachable("auto")
    assert probed == [("10.0.0.5", 6379), ("10.0.0.5", 10001), ("10.0.0.5", 10001), ("10.0.0.6", 10001)]


def test_a_cluster_run_does_not_open_the_lifter_in_the_driver(tmp_path: Path, monkeypatch):
    """With --address the driver may lack the workers' hardware (a CPU-only driver of GPU
    workers, --backend tensorrt): only the model's name or file and the smoothing settings
    are checked there; a local Ray opens the lifter first, as its tasks will."""
    import realtime.estimator

    opened = []

    def open_lifter(model, backend, threads=None):
        opened.append(backend)
        raise UserError("TensorRT is not usable here")

    class Started(Exception):
        pass

    def init_ray(*a, **k):
        raise Started()

    monkeypatch.setattr(realtime.estimator, "open_lifter", open_lifter)
    monkeypatch.setattr(B, "check_reachable", lambda *a, **k: None)
    monkeypatch.setattr(B, "_init_ray", init_ray)
    monkeypatch.setattr(B, "_local_ray", lambda address: address is None)
    opts = B.BatchOptions(Options(model=MODEL, backend="tensorrt"))
    with pytest.raises(Started):
        B.run_batch([str(DEMO)], tmp_path / "o", opts, address="10.0.0.5:6379", progress=False)
    assert opened == []
    with pytest.raises(UserError, match="TensorRT is not usable here"):
        B.run_batch([str(DEMO)], tmp_path / "o", opts, progress=False)
    assert opened == ["tensorrt"]
    for model, why in (("nosuch", "unknown model 'nosuch'"), (str(tmp_path / "gone.onnx"), "no such file")):
        with pytest.raises(UserError, match=why):
            B.check_pose_options(dataclasses.replace(opts, pose=Options(model=model)).resolved(), local=False)
    assert opened == ["tensorrt"]


def test_too_many_cpus_per_task_only_warns_on_a_cluster(monkeypatch, caplog):
    """An autoscaling cluster (head with no CPUs, workers started on demand) may add a big
    enough node later: only a local Ray this run started refuses the run."""
    import logging

    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 0.0}},
                                               {"Alive": False, "Resources": {"CPU": 64.0}}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})
    with caplog.at_level(logging.WARNING, logger=B.log.name):
        B.check_resources(4, local=False)
    assert [r.getMessage() for r in caplog.records] == [
        "no Ray node has 4 CPUs now (the largest has 0, 0 in all): the tasks wait until one joins"]
    with pytest.raises(UserError, match=r"--cpus-per-task 4 is more than a Ray node has"):
        B.check_resources(4, local=True)


def test_the_callers_sigterm_handler_is_restored_on_every_way_out(tmp_path: Path, monkeypatch):
    """ray.init sets a SIGTERM handler of its own before it connects: a failed init, or a
    failed shutdown, must still give the caller back its own."""
    import signal as signals

    def mine(signum, frame):
        pass

    def rays(signum, frame):
        pass

    def init_fails(*a):
        signals.signal(signals.SIGTERM, rays)
        raise UserError("cannot reach Ray at x")

    def init_ok(*a):
        signals.signal(signals.SIGTERM, rays)
        return True

    def shutdown_fails():
        signals.signal(signals.SIGTERM, rays)
        raise RuntimeError("shutdown failed")

    monkeypatch.setattr(B, "_local_ray", lambda address: True)
    monkeypatch.setattr(B, "check_pose_options", lambda *a, **k: None)
    monkeypatch.setattr(B, "check_resources", lambda *a, **k: None)
    monkeypatch.setattr(B, "_schedule", lambda *a, **k: None)
    monkeypatch.setattr(B, "_shutdown_ray", shutdown_fails)
    previous = signals.signal(signals.SIGTERM, mine)
    try:
        for init, error in ((init_fails, UserError), (init_ok, RuntimeError)):
            monkeypatch.setattr(B, "_init_ray", init)
            with pytest.raises(error):
                B.run_batch([str(DEMO)], tmp_path / "o", B.BatchOptions(Options(model=MODEL)), progress=False)
            assert signals.getsignal(signals.SIGTERM) is mine
    finally:
        signals.signal(signals.SIGTERM, previous)


def test_a_signal_during_ray_shutdown_is_kept_and_a_second_one_aborts_it(tmp_path: Path, monkeypatch):
    """One signal while Ray shuts down does not cut it short but is not lost (the run ends
    as stopped by it); a second one stops a hung shutdown (Ctrl-C: KeyboardInterrupt;
    SIGTERM: the process ends by it)."""
    import signal as signals
    import threading
    import time

    import ray

    def shutdown_signalled(*signums):
        def shutdown():
            for signum in signums:
                os.kill(os.getpid(), signum)
                time.sleep(0.3)
        return shutdown

    before = signals.getsignal(signals.SIGINT), signals.getsignal(signals.SIGTERM)
    monkeypatch.setattr(ray, "shutdown", shutdown_signalled(signals.SIGTERM))
    assert B._shutdown_ray() == signals.SIGTERM
    hung = threading.Event()
    monkeypatch.setattr(ray, "shutdown", lambda: (shutdown_signalled(signals.SIGINT, signals.SIGINT)(), hung.wait()))
    with pytest.raises(KeyboardInterrupt):
        B._shutdown_ray()
    hung.set()
    assert (signals.getsignal(signals.SIGINT), signals.getsignal(signals.SIGTERM)) == before

    # the run ends as stopped by it: BatchInterrupted, with the report of the videos done
    monkeypatch.setattr(B, "_local_ray", lambda address: True)
    monkeypatch.setattr(B, "check_pose_options", lambda *a, **k: None)
    monkeypatch.setattr(B, "check_resources", lambda *a, **k: None)
    monkeypatch.setattr(B, "_init_ray", lambda *a: True)
    monkeypatch.setattr(B, "_schedule", lambda *a, **k: None)
    monkeypatch.setattr(ray, "shutdown", shutdown_signalled(signals.SIGTERM))
    with pytest.raises(B.BatchInterrupted) as stopped:
        B.run_batch([str(DEMO)], tmp_path / "o", B.BatchOptions(Options(model=MODEL)), progress=False)
    assert stopped.value.exit_code == 143 and stopped.value.report.stopped_by == "SIGTERM"

    code = ("import os, signal, threading, time, ray; from realtime import batch as B\n"
            "def shutdown():\n"
            "    for _ in range(2):\n"
            "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.3)\n"
            "    threading.Event().wait(60)\n"
            "ray.shutdown = shutdown\nB._shutdown_ray()\nprint('not stopped')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == -signals.SIGTERM, run.stdout + run.stderr
