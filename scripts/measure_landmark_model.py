"""Is MediaPipe's pose landmark model, run by ourselves on people's crops (batched over people),
cheaper per person than a MediaPipe Tasks call? (docs/multiperson.md, "Throughput": the
several-people path makes one MediaPipe call per person, so the per-person cost of the
landmark model bounds its frame rate.)

On one person of one frame of a video, interleaved round by round (a shared machine's load
then weighs on every variant alike), prints the median time of:
  - the landmark model `pose_landmarks_detector.tflite` (from models/pose_landmarker_full.task)
    on ai-edge-litert's interpreter (XNNPACK), input resized to a batch of 1, 2 and 4 crops,
    with 1 and 2 threads; per call and per person;
  - one MediaPipe VIDEO-mode call following that person in a crop around them (landmarks only,
    no person detector: what `PeopleEstimator(follow=True)` makes);
  - one MediaPipe IMAGE-mode call on the whole frame (person detector + landmarks);
and the model's tensors, whether a batch gives each crop the same outputs as one crop alone,
and the share of the model's multiply-adds each output needs (what dropping the segmentation
and heatmap heads could save).

--compare K: instead, on every K-th frame, each person MediaPipe (IMAGE mode) finds is looked
for again by realtime.landmark_runner in the region their joints give
(roi_from_joints); prints the mean distance between the two sets of landmarks MediaPipe
calls visible (px and % of the person's crop-box side) and how many the runner refused.

Needs ai-edge-litert, which the product does not depend on:
    .venv/bin/python -m pip install ai-edge-litert==2.3.0
    python scripts/measure_landmark_model.py data_out/multi/cross4/scene.avi --frame 39 --rounds 60
    python scripts/measure_landmark_model.py data_out/multi/cross2/scene.avi --compare 6
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.checkpoint import MODELS_DIR  # noqa: E402

TASK = MODELS_DIR / "pose_landmarker_full.task"
SIDE = 256  # the landmark model's input, px


def _interpreter(model: bytes, batch: int, threads: int, delegate: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=model, num_threads=threads, experimental_op_resolver_type=kind)
    if batch != 1:
        it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, SIDE, SIDE, 3])
    it.allocate_tensors()
    return it


def _run(it, x: np.ndarray) -> list[np.ndarray]:
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def _macs(op: dict, tensors: dict) -> int:
    """Multiply-adds of one op (convolutions, dense layers), else its output size."""
    shape = tensors[op["outputs"][0]]["shape"]
    n = int(np.prod(shape))
    name = op["op_name"]
    if name in ("CONV_2D", "TRANSPOSE_CONV"):
        return n * int(np.prod(tensors[op["inputs"][1]]["shape"][1:]))
    if name == "DEPTHWISE_CONV_2D":
        w = tensors[op["inputs"][1]]["shape"]
        return n * int(w[1] * w[2])
    if name == "FULLY_CONNECTED":
        return n * int(tensors[op["inputs"][1]]["shape"][1])
    return n


def output_shares(model: bytes) -> dict[str, float]:
    """Each output's share of the model's multiply-adds (the ops it depends on), that of the
    landmark outputs together (landmarks, presence, world landmarks), and the total (GMAC)."""
    it = _interpreter(model, 1, 1, delegate=False)
    ops = it._get_ops_details()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    producer = {o: op["index"] for op in ops for o in op["outputs"]}
    cost = {op["index"]: _macs(op, tensors) for op in ops}
    total = sum(cost.values())

    def needs(t: int) -> set[int]:
        seen, stack = set(), [t]
        while stack:
            p = producer.get(stack.pop())
            if p is not None and p not in seen:
                seen.add(p)
                stack += [i for i in ops[p]["inputs"] if i >= 0]
        return seen

    outs = {d["name"]: needs(d["index"]) for d in it.get_output_details()}
    shares = {name: sum(cost[i] for i in s) / total for name, s in outs.items()}
    # the (1, K) outputs: landmarks (195), presence (1), world landmarks (117)
    landmarks = set().union(*(needs(d["index"]) for d in it.get_output_details() if len(d["shape"]) == 2))
    shares["landmarks+presence+world"] = sum(cost[i] for i in landmarks) / total
    shares["total GMAC"] = total / 1e9
    return shares


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--frame", type=int, default=0, help="frame index to take the person from")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--compare", type=int, default=0, metavar="K",
                    help="compare the runner's landmarks with MediaPipe's on every K-th frame instead")
    args = ap.parse_args()
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        print("needs ai-edge-litert: .venv/bin/python -m pip install ai-edge-litert==2.3.0")
        return 2
    import cv2

    from realtime.detector import PoseDetector
    from realtime.sources import VideoFileSource

    if args.compare > 0:
        return compare(args.video, args.compare)
    with VideoFileSource(args.video, max_frames=args.frame + 1) as src:
        image = list(src)[-1].image
    whole = PoseDetector(mode="image", num_poses=1, min_detection_confidence=0.3, min_presence_confidence=0.3)
    people = whole.detect_people(image)
    if not people:
        print(f"nobody found on frame {args.frame}: pick another --frame")
        return 1
    box = people[0].box
    side = int(box.side * 1.3)
    x0, y0 = int(box.cx - side / 2), int(box.cy - side / 2)
    h, w = image.shape[:2]
    pad = np.zeros((side, side, 3), np.uint8)
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    pad[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = image[ay0:ay1, ax0:ax1]
    crop = cv2.resize(pad, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    roi = (x0, y0, x0 + side, y0 + side)

    model = zipfile.ZipFile(TASK).read("pose_landmarks_detector.tflite")
    variants = {(b, t): _interpreter(model, b, t) for t in (1, 2) for b in (1, 2, 4)}
    one = variants[(1, 1)]
    for d, out in zip(one.get_output_details(), _run(one, crop[None])):
        print(f"output {d['name']}: {tuple(d['shape'])}" + (f" = {out.ravel()[0]:.4f}" if out.size == 1 else ""))
    single = _run(one, crop[None])
    batch = _run(variants[(4, 1)], np.repeat(crop[None], 4, 0))
    print("batch of 4 vs one crop, max |difference| over outputs:",
          max(float(np.abs(b - s).max()) for b, s in zip(batch, single)))
    for name, share in output_shares(model).items():
        print(f"multiply-adds {name}: {share:.3f}")

    follow = PoseDetector(mode="video", num_poses=1, min_detection_confidence=0.3, min_presence_confidence=0.3)
    times: dict[str, list[float]] = {f"litert batch {b}, {t} thread(s)": [] for b, t in variants}
    times["mediapipe VIDEO call on the crop"] = []
    times["mediapipe IMAGE call on the frame"] = []
    followed = 0
    for r in range(args.rounds):
        for (b, t), it in variants.items():
            x = np.repeat(crop[None], b, 0)
            t0 = time.perf_counter()
            _run(it, x)
            times[f"litert batch {b}, {t} thread(s)"].append((time.perf_counter() - t0) * 1000.0)
        t0 = time.perf_counter()
        followed += len(follow.detect_people(image, r / 30.0, roi)) > 0
        times["mediapipe VIDEO call on the crop"].append((time.perf_counter() - t0) * 1000.0)
        t0 = time.perf_counter()
        whole.detect_people(image)
        times["mediapipe IMAGE call on the frame"].append((time.perf_counter() - t0) * 1000.0)
    video = statistics.median(times["mediapipe VIDEO call on the crop"][3:])
    print(f"medians over rounds 4-{args.rounds} (the VIDEO-mode landmarker found the person on {followed} "
          f"of {args.rounds} calls):")
    for name, v in times.items():
        per_call = statistics.median(v[3:])
        n = int(name.split("batch ")[1].split(",")[0]) if name.startswith("litert") else 1
        print(f"  {name:36s} {per_call:6.1f} ms per call, {per_call / n:6.1f} ms per person, "
              f"{per_call / n / video:.2f}x the VIDEO call")
    whole.close(), follow.close()
    return 0


def compare(video: str, every: int) -> int:
    """The runner's landmarks against MediaPipe's on the same people (module docstring)."""
    from realtime.detector import PoseDetector
    from realtime.landmark_runner import LandmarkRunner, roi_from_joints
    from realtime.sources import VideoFileSource

    px, rel, refused = [], [], 0
    with VideoFileSource(video) as src, LandmarkRunner(min_presence=0.3) as runner, \
            PoseDetector(mode="image", num_poses=4, min_detection_confidence=0.3, min_presence_confidence=0.3) as mp:
        for f in src:
            if f.index % every:
                continue
            for p in mp.detect_people(f.image):
                roi = roi_from_joints(p.joints_2d_px, p.confidence)
                if roi is None:
                    continue
                d = runner.detect([f.image], [roi])[0]
                if d is None:
                    refused += 1
                    continue
                vis = p.visibility > 0.5
                err = float(np.linalg.norm(d.landmarks_px[vis] - p.landmarks_px[vis], axis=1).mean())
                px.append(err)
                rel.append(err / p.box.side)
    if not px:
        print("nobody compared")
        return 1
    print(f"{len(px) + refused} people: runner refused {refused}; visible landmarks differ from MediaPipe's by "
          f"{np.mean(px):.1f} px mean (median {np.median(px):.1f}), {100 * np.mean(rel):.2f} % of the crop-box side")
    return 0


if __name__ == "__main__":
    sys.exit(main())
