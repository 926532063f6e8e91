"""Frame-rate benchmark: MediaPipe alone vs the whole per-frame product.

The frames of a video (default: the demo clip) are decoded into memory first, so decoding is
not timed. Then, on the same frames, interleaved frame by frame (to spread the noise of a shared machine):
  A  MediaPipe Pose Landmarker alone (VIDEO mode, its own tracker);
  B  MediaPipe + lifter + metric trajectory + writing an .npz (PoseEstimator + NpzWriter).
With --people N (N > 1) both use MediaPipe as `--people N` does (IMAGE mode, num_poses = N),
and B is the several-people product (realtime.people: tracker with appearance, the lifter
batched over the people, a root per person); the batched lifter's own cost for N people is
then compared with one person's on the same detections (the target is <= 2x), and the
MediaPipe calls per frame of B with the cost of one call in IMAGE and in VIDEO mode give the
ratio detection alone allows (`_call_bound`); --follow benchmarks PeopleEstimator(follow=True).
With --mirror-2d a third variant runs on the same frames, interleaved with A and B:
  C  B with the mirrored 2D of `posestream video --mirror-2d` (realtime.detector, mirror=True);
and its ratio to A is printed too.
Prints the median fps of each over --repeats runs and the ratio B/A (target >= 0.85:
lifting must cost little next to 2D detection). Numbers are measured, never asserted.

--stages prints per-stage backend latencies instead (engines.bench_stages, when installed).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from engines.checkpoint import default_app_model
from engines.errors import UserError

DEFAULT_VIDEO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from realtime.cli_options import positive_int

    p.add_argument("video", nargs="?", default=str(DEFAULT_VIDEO), help="video to run on (default assets/demo.mp4)")
    p.add_argument("--model", default=default_app_model(),
                   help=f"shipped model name or .pt/.onnx/.engine path: the Final model (generator + refiner) "
                        f"or a Base lifter (default {default_app_model()})")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="use only the first N frames")
    p.add_argument("--people", type=int, default=1, metavar="N",
                   help="benchmark `--people N` (MediaPipe with num_poses = N on both sides; default 1)")
    p.add_argument("--follow", action="store_true",
                   help="with --people N: each person apart from the others followed by their own VIDEO-mode "
                        "landmarker (realtime.people.PeopleEstimator's follow)")
    p.add_argument("--batched", action="store_true",
                   help="with --people N: each person apart from the others looked for by MediaPipe's landmark model "
                        "run by us, everyone in one call (realtime.landmark_runner; needs ai-edge-litert)")
    p.add_argument("--search-workers", type=int, default=None, metavar="W",
                   help="with --people N: MediaPipe calls the search runs at once (default: as the app, "
                        "realtime.people.search_workers: one per person, at most one per CPU core)")
    p.add_argument("--mirror-2d", action="store_true",
                   help="also benchmark the product with --mirror-2d (a second MediaPipe pass on the mirrored frames), "
                        "interleaved with the other two")
    p.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the lifter runtime (default 1: see realtime/video_cmd.py; 0 = the runtime default)")
    p.add_argument("--stages", nargs=argparse.REMAINDER, default=None,
                   help="per-stage backend latencies (engines.bench_stages); the rest of the line is passed on")


def _run_stages(argv: list[str]) -> int:
    try:
        from engines import bench_stages
    except ImportError:
        print("posestream bench --stages: unavailable in this install (engines.bench_stages is missing)")
        return 2
    return int(bench_stages.main(argv) or 0)


def run(args: argparse.Namespace) -> int:
    if args.stages is not None:
        return _run_stages(list(args.stages))
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    if args.people < 1:
        raise UserError("--people must be at least 1")
    if args.mirror_2d and args.people > 1:
        raise UserError("--mirror-2d follows one person: it cannot be combined with --people N > 1")
    from realtime.detector import PoseDetector
    from realtime.estimator import PoseEstimator, open_lifter
    from realtime.people import MIN_CONFIDENCE, PeopleEstimator, open_landmarks, search_workers
    from realtime.sources import VideoFileSource
    from realtime.writers import open_writer

    with VideoFileSource(args.video, max_frames=args.max_frames) as src:
        frames = list(src)
        fps_src = src.fps
    if not frames:
        raise UserError(f"no decodable frames in {args.video}")
    lifter = open_lifter(args.model, args.backend, args.threads)
    print(f"{len(frames)} frames of {args.video} ({frames[0].image.shape[1]}x{frames[0].image.shape[0]}), "
          f"lifter {args.model} on {lifter.name}, {args.repeats} alternating runs each"
          + (f", --people {args.people}" if args.people > 1 else ""))
    mode = "image" if args.people > 1 else "video"
    workers = search_workers(args.people) if args.search_workers is None else args.search_workers
    if workers < 1:
        raise UserError("--search-workers must be at least 1")
    if args.people > 1:
        print(f"  the search for people runs up to {workers} MediaPipe call(s) at once")

    # Interleaved per frame: two independent trackers see the same sequence; on each frame
    # A (MediaPipe alone) and then B (the whole product) run back to back, so load bursts
    # from other processes hit both alike. fps = frames / summed time; the median per-frame
    # time is printed too (robust to bursts).
    tot_a, tot_b, med_a, med_b, calls = [], [], [], [], []
    tot_c, med_c = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            conf = {} if args.people == 1 else {"min_detection_confidence": MIN_CONFIDENCE,
                                                "min_presence_confidence": MIN_CONFIDENCE}
            det_a = PoseDetector(mode=mode, num_poses=args.people, **conf)
            est = PoseEstimator(detector=PoseDetector(mode=mode, num_poses=args.people, **conf), lifter=lifter)
            if args.people > 1:
                est = PeopleEstimator(est, follow=args.follow, landmarks=open_landmarks() if args.batched else None,
                                      workers=workers)
            lift = est.sequence(None)  # each frame's own root solve
            writer = open_writer(Path(tmp) / f"bench{r}.npz", fps_src)
            if args.mirror_2d:
                est_c = PoseEstimator(detector=PoseDetector(mode=mode, mirror=True), lifter=lifter)
                lift_c = est_c.sequence(None)
                writer_c = open_writer(Path(tmp) / f"bench{r}_mirror.npz", fps_src)
            ta, tb, tc = np.zeros(len(frames)), np.zeros(len(frames)), np.zeros(len(frames))
            na = nb = nc = 0
            for i, f in enumerate(frames):
                t0 = time.perf_counter()
                na += len(det_a.detect_people(f.image, f.timestamp_s)) if args.people > 1 \
                    else det_a.detect(f.image, f.timestamp_s) is not None
                t1 = time.perf_counter()
                for pose in lift.push(est.detect(f)):
                    writer.write(pose)
                    nb += len(pose.people)
                t2 = time.perf_counter()
                if args.mirror_2d:
                    for pose in lift_c.push(est_c.detect(f)):
                        writer_c.write(pose)
                        nc += len(pose.people)
                ta[i], tb[i], tc[i] = t1 - t0, t2 - t1, time.perf_counter() - t2
            t0 = time.perf_counter()
            for pose in lift.flush():  # a centred model's last frames
                writer.write(pose)
                nb += len(pose.people)
            writer.close()  # finalising the .npz is part of B's cost
            tb[-1] += time.perf_counter() - t0
            if args.mirror_2d:
                t0 = time.perf_counter()
                for pose in lift_c.flush():
                    writer_c.write(pose)
                    nc += len(pose.people)
                writer_c.close()
                tc[-1] += time.perf_counter() - t0
                est_c.detector.close()
                tot_c.append(len(frames) / tc.sum())
                med_c.append(1.0 / np.median(tc))
            det_a.close()
            calls_b = getattr(est, "detector_calls", len(frames))
            runner = est.landmarks if args.people > 1 else None
            batched = runner.calls if runner is not None else 0
            if args.people > 1:
                est.close_search()
            (est.est if args.people > 1 else est).detector.close()  # the lifter is shared between runs
            tot_a.append(len(frames) / ta.sum())
            tot_b.append(len(frames) / tb.sum())
            med_a.append(1.0 / np.median(ta))
            med_b.append(1.0 / np.median(tb))
            calls.append(calls_b / len(frames))
            print(f"  run {r + 1}: MediaPipe {tot_a[-1]:.1f} fps ({na} people found), "
                  f"+ lifter + npz {tot_b[-1]:.1f} fps ({nb} people lifted"
                  + (f", {calls[-1]:.2f} MediaPipe calls per frame" if args.people > 1 else "")
                  + (f", {batched / len(frames):.2f} batched landmark calls per frame for {est.batched_found} people"
                     if batched else "") + ")"
                  + (f", with --mirror-2d {tot_c[-1]:.1f} fps ({nc} people lifted)" if args.mirror_2d else ""))
    if args.people > 1:
        _lifter_cost(frames, lifter, args.people)
        _call_bound(frames, args.people, statistics.median(calls))
    lifter.close()
    ma, mb = statistics.median(tot_a), statistics.median(tot_b)
    pa, pb = statistics.median(med_a), statistics.median(med_b)
    print(f"MediaPipe alone:            {ma:.1f} fps ({1000 / ma:.1f} ms/frame; median frame {1000 / pa:.1f} ms)")
    print(f"MediaPipe + lifter + write: {mb:.1f} fps ({1000 / mb:.1f} ms/frame; median frame {1000 / pb:.1f} ms)")
    print(f"ratio: {mb / ma:.3f} (median-frame ratio {pb / pa:.3f}; target >= 0.85)")
    if args.mirror_2d:
        mc, pc = statistics.median(tot_c), statistics.median(med_c)
        print(f"the same with --mirror-2d:  {mc:.1f} fps ({1000 / mc:.1f} ms/frame; median frame {1000 / pc:.1f} ms)")
        print(f"ratio with --mirror-2d: {mc / ma:.3f} (median-frame ratio {pc / pa:.3f}); "
              f"{mb / mc:.2f}x the time of the product without it")
    return 0


def _call_bound(frames: list, people: int, calls_per_frame: float, max_frames: int = 40) -> None:
    """What MediaPipe alone bounds `--people N` at: the time of one IMAGE-mode call (person
    detector + landmark model, as MediaPipe alone makes once per frame and `--people N` once
    per crop or search) and of one VIDEO-mode call that follows its person from the last
    landmarks (the landmark model alone, the person detector skipped), median over the same
    frames, interleaved. With `calls_per_frame` IMAGE-mode calls per frame the ratio to
    MediaPipe alone cannot exceed 1 / calls_per_frame, and with one tracking call per person
    (no detector, no search, nothing else) not N x t_video / t_image."""
    from realtime.detector import PoseDetector
    from realtime.people import MIN_CONFIDENCE

    conf = {"min_detection_confidence": MIN_CONFIDENCE, "min_presence_confidence": MIN_CONFIDENCE}
    ti, tv = [], []
    with PoseDetector(mode="image", num_poses=people, **conf) as still, PoseDetector(mode="video", **conf) as follow:
        for f in frames[:max_frames]:
            t0 = time.perf_counter()
            still.detect_people(f.image, f.timestamp_s)
            t1 = time.perf_counter()
            follow.detect_people(f.image, f.timestamp_s)
            ti.append(t1 - t0)
            tv.append(time.perf_counter() - t1)
    a, v = 1000 * float(np.median(ti)), 1000 * float(np.median(tv[1:] or tv))
    print(f"MediaPipe per call: IMAGE mode (detector + landmarks) {a:.1f} ms, VIDEO mode following a person "
          f"(landmarks only) {v:.1f} ms; --people {people} made {calls_per_frame:.2f} calls per frame: "
          f"detection alone bounds the ratio at about {1 / calls_per_frame:.2f}, and at {a / (people * v):.2f} "
          f"with one landmark-only call per person")


def _lifter_cost(frames: list, lifter: object, people: int, repeats: int = 20) -> None:
    """The batched lift of `people` people (realtime.sequence.lift_jobs: one model call for
    everyone, then each person's PoseFrame with its root solve) against one person's, on the
    first frames' detections (the first person found repeated to make `people`; a temporal
    model gets each person's window of that frame's input), median time over the frames and
    repeats. Prints the ratio."""
    from realtime.detector import PoseDetector
    from realtime.estimator import Detected, PoseEstimator
    from realtime.sequence import LiftJob, lift_jobs

    with PoseDetector(mode="image", num_poses=people, min_detection_confidence=0.3, min_presence_confidence=0.3) as det:
        est = PoseEstimator(detector=det, lifter=lifter)

        def jobs(ds: list) -> list:
            if est.temporal is None:
                return [LiftJob([d], [d]) for d in ds]
            return [LiftJob([d], [d], np.repeat(est.frame_input(d)[None, None], est.temporal.window, axis=1), (False,))
                    for d in ds]

        def lift(ds: list) -> None:
            js = jobs(ds)
            for job, (rel, fbi, ms) in zip(js, lift_jobs(est, js)):
                est.pose_frame(job.people[0], rel[0], fbi[0], {"lift": ms})

        t1, tn = [], []
        for f in frames[: max(1, min(len(frames), 10))]:
            found = det.detect_people(f.image, f.timestamp_s)
            if not found:
                continue
            h, w = f.image.shape[:2]
            ds = [Detected(f.index, f.timestamp_s, (w, h), found[k % len(found)], {}, f.image, track_id=k)
                  for k in range(people)]
            for _ in range(repeats):
                t0 = time.perf_counter()
                lift(ds[:1])
                t_1 = time.perf_counter()
                lift(ds)
                t1.append(t_1 - t0)
                tn.append(time.perf_counter() - t_1)
    if not t1:
        print("lifter cost: no person found in the first frames")
        return
    a, b = 1000 * float(np.median(t1)), 1000 * float(np.median(tn))
    print(f"lifter cost (batched lift + root solves): 1 person {a:.2f} ms, {people} people {b:.2f} ms, "
          f"ratio {b / a:.2f} (target <= 2)")
