"""How steady a pose file is: `posestream stability OUT.npz [--against-mediapipe VIDEO] [--lag-against REF.npz]`.

Figures, all on root-relative joints (pelvis = 0) unless said otherwise:
    acceleration  mean over joints and frames of |j[t+1] - 2 j[t] + j[t-1]|, mm/frame^2, over
                  triples of consecutive source frames that all have a person. A still-standing
                  person gives the jitter alone; real motion adds its own acceleration, so the
                  figure compares outputs of the *same* clip, never clips with each other.
                  Per frame^2 it grows with the square of the frame time for the same motion
                  (a 5 fps clip shows 36x the figure of the same motion filmed at 30 fps), so
                  the figure is also given at 30 fps: acceleration * (fps / 30)^2, fps from
                  the file's timestamps. (Frame-to-frame jitter does not scale that way: for
                  jitter the 30 fps figure reads too low below 30 fps and too high above.)
    bone CV       per limb bone (upper/lower arms and legs, 8 bones) the coefficient of
                  variation std/mean of its length over the frames with a person, then the
                  mean over the bones. People do not change size: 0 is ideal.
    root step     |translation[t+1] - translation[t]| of the camera-space pelvis between
                  consecutive frames where it is known: median, p95 and max, mm/frame.
    depth median  median of translation z, mm (to compare trajectories of the same clip).
    lag           frames by which the output trails a reference output of the same clip (the
                  single-frame output, or MediaPipe's world landmarks): the peak of the
                  cross-correlation of the two outputs' joint velocities, refined to a fraction
                  of a frame by a parabola through the peak. Positive = the output is late.

--against-mediapipe VIDEO runs MediaPipe (VIDEO mode, as the app does) over the video the file
was made from and prints the same figures for its world landmarks (33 -> 17 joints, hip-centred)
on the frames where both have a person; the output's own row then uses those frames too.
MediaPipe's world landmarks have no camera-space root, so its root columns stay empty.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.skeleton import JOINT_INDEX, ROOT

LIMB_BONES: tuple[tuple[int, int], ...] = tuple(
    (JOINT_INDEX[a], JOINT_INDEX[b]) for a, b in (
        ("r_hip", "r_knee"), ("r_knee", "r_ankle"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
        ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist")))
MAX_LAG_FRAMES = 15


@dataclass(frozen=True)
class Stability:
    """The figures of one output (see the module docstring); NaN where not measurable."""

    frames: int                  # frames with a person that were measured
    acceleration_mm: float       # mm/frame^2 at the clip's own frame rate
    bone_cv: float
    root_step_median_mm: float
    root_step_p95_mm: float
    root_step_max_mm: float
    depth_median_mm: float
    fps: float = float("nan")    # the clip's frame rate (NaN: unknown)
    acceleration_30fps_mm: float = float("nan")  # acceleration_mm * (fps / 30)^2, mm/frame^2 at 30 fps


def frame_rate(timestamps_s: np.ndarray, index: np.ndarray) -> float:
    """Frames per second from (T,) timestamps (s) and source indices: the median time per
    source frame between consecutive entries; NaN if it cannot be told."""
    t, i = np.asarray(timestamps_s, np.float64), np.asarray(index, np.float64)
    if len(t) < 2:
        return float("nan")
    per_frame = np.diff(t) / np.diff(i)
    per_frame = per_frame[np.isfinite(per_frame) & (per_frame > 0)]
    return float(1.0 / np.median(per_frame)) if per_frame.size else float("nan")


def _consecutive(index: np.ndarray, ok: np.ndarray, span: int) -> np.ndarray:
    """(T - span,) bool: frames t..t+span all ok and their source indices consecutive."""
    index = np.asarray(index, np.int64)
    good = ok[:len(ok) - span].copy()
    for k in range(1, span + 1):
        good &= ok[k:len(ok) - span + k] & (index[k:len(index) - span + k] - index[:len(index) - span] == k)
    return good


def root_relative(joints_mm: np.ndarray) -> np.ndarray:
    """(T, 17, 3) -> the same with the pelvis subtracted."""
    j = np.asarray(joints_mm, np.float64)
    return j - j[:, ROOT:ROOT + 1]


def joint_acceleration(joints_mm: np.ndarray, ok: np.ndarray, index: np.ndarray) -> float:
    """Mean |second difference| (mm/frame^2) of (T, 17, 3) root-relative joints over the
    triples of consecutive frames whose mask `ok` (T,) is True; NaN if there is none."""
    j = root_relative(joints_mm)
    ok = np.asarray(ok, bool) & np.isfinite(j).all(axis=(1, 2))
    if len(j) < 3:
        return float("nan")
    good = _consecutive(index, ok, 2)
    acc = np.linalg.norm(j[2:] - 2 * j[1:-1] + j[:-2], axis=-1)[good]
    return float(acc.mean()) if acc.size else float("nan")


def bone_length_cv(joints_mm: np.ndarray, ok: np.ndarray) -> float:
    """Mean over LIMB_BONES of std/mean of the bone's length over frames where `ok`."""
    j = np.asarray(joints_mm, np.float64)[np.asarray(ok, bool)]
    j = j[np.isfinite(j).all(axis=(1, 2))]
    if len(j) < 2:
        return float("nan")
    lengths = np.stack([np.linalg.norm(j[:, c] - j[:, p], axis=-1) for p, c in LIMB_BONES], axis=1)
    return float(np.mean(lengths.std(axis=0) / lengths.mean(axis=0)))


def root_steps(translation_mm: np.ndarray, ok: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Distances (mm) between the camera-space roots of consecutive frames where both are
    known and `ok`."""
    t = np.asarray(translation_mm, np.float64)
    ok = np.asarray(ok, bool) & np.isfinite(t).all(axis=1)
    if len(t) < 2:
        return np.zeros(0)
    good = _consecutive(index, ok, 1)
    return np.linalg.norm(t[1:] - t[:-1], axis=-1)[good]


def measure(joints_mm: np.ndarray, ok: np.ndarray, index: np.ndarray,
            translation_mm: np.ndarray | None = None, fps: float = float("nan")) -> Stability:
    """Every figure of one output: joints (T, 17, 3) mm, mask (T,), source indices (T,),
    camera-space roots (T, 3) mm or None, the clip's frame rate (NaN: unknown)."""
    ok = np.asarray(ok, bool)
    nan = float("nan")
    steps = root_steps(translation_mm, ok, index) if translation_mm is not None else np.zeros(0)
    depth = (np.asarray(translation_mm, np.float64)[ok, 2] if translation_mm is not None else np.zeros(0))
    depth = depth[np.isfinite(depth)]
    acc = joint_acceleration(joints_mm, ok, index)
    return Stability(int(ok.sum()), acc, bone_length_cv(joints_mm, ok),
                     float(np.median(steps)) if steps.size else nan,
                     float(np.percentile(steps, 95)) if steps.size else nan,
                     float(steps.max()) if steps.size else nan,
                     float(np.median(depth)) if depth.size else nan,
                     float(fps), acc * (fps / 30.0) ** 2 if fps > 0 else nan)


def lag_frames(output_mm: np.ndarray, reference_mm: np.ndarray, ok: np.ndarray, index: np.ndarray,
               max_lag: int = MAX_LAG_FRAMES) -> float:
    """Frames by which `output_mm` trails `reference_mm` (both (T, 17, 3), the same frames;
    positive = late), from the cross-correlation of their root-relative joint velocities
    over frames where `ok`; NaN if fewer than 2 * max_lag + 3 velocity samples are usable."""
    a, b = root_relative(output_mm), root_relative(reference_mm)
    ok = np.asarray(ok, bool) & np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
    if len(a) < 2:
        return float("nan")
    good = _consecutive(index, ok, 1)
    if good.sum() < 2 * max_lag + 3:
        return float("nan")
    # Velocities on a regular frame grid (missing ones 0), each coordinate without its mean.
    idx = np.asarray(index, np.int64)
    n = int(idx[-1] - idx[0]) + 1
    va, vb = np.zeros((n, a[0].size)), np.zeros((n, a[0].size))
    slot = idx[:-1][good] - idx[0]
    va[slot] = (a[1:] - a[:-1])[good].reshape(len(slot), -1)
    vb[slot] = (b[1:] - b[:-1])[good].reshape(len(slot), -1)
    have = np.zeros(n, bool)
    have[slot] = True
    va[have] -= va[have].mean(axis=0)
    vb[have] -= vb[have].mean(axis=0)
    lags = np.arange(-max_lag, max_lag + 1)
    score = np.empty(len(lags))
    for i, k in enumerate(lags):  # output at t against reference at t - k
        x, y = (va[k:], vb[:n - k]) if k >= 0 else (va[:n + k], vb[-k:])
        both = (x != 0).any(axis=1) & (y != 0).any(axis=1)
        denom = np.sqrt((x[both] ** 2).sum() * (y[both] ** 2).sum())
        score[i] = (x[both] * y[both]).sum() / denom if denom > 0 else -np.inf
    i = int(np.argmax(score))
    if 0 < i < len(lags) - 1 and np.isfinite(score[i - 1:i + 2]).all():
        s0, s1, s2 = score[i - 1:i + 2]
        curv = s0 - 2 * s1 + s2
        return float(lags[i] + (0.5 * (s0 - s2) / curv if curv < 0 else 0.0))
    return float(lags[i])


def mediapipe_world(video: str | Path, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's world landmarks as 17 joints (len(index), 17, 3) mm and a found-mask, for
    the source frames `index` of `video`, run as the app runs it (VIDEO mode)."""
    from realtime.detector import PoseDetector
    from realtime.sources import VideoFileSource

    want = {int(i): k for k, i in enumerate(np.asarray(index, np.int64))}
    joints = np.full((len(want), 17, 3), np.nan)
    found = np.zeros(len(want), bool)
    last = max(want) if want else -1
    with VideoFileSource(video, max_frames=last + 1) as src, PoseDetector(mode="video") as det:
        for frame in src:
            d = det.detect(frame.image, frame.timestamp_s)
            k = want.get(frame.index)
            if d is not None and k is not None:
                joints[k], found[k] = d.world_mm, True
    return joints, found


# ---- command -------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="OUT.npz", help="a pose file written by posestream video/webcam (.npz)")
    p.add_argument("--against-mediapipe", metavar="VIDEO",
                   help="also measure MediaPipe's world landmarks on the same frames of VIDEO (the file's source)")
    p.add_argument("--lag-against", metavar="REF.npz",
                   help="another pose file of the same clip (e.g. the single-frame output): the lag of OUT behind it")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def _fmt(x: float, spec: str = ".1f") -> str:
    return "-" if not np.isfinite(x) else format(x, spec)


def run(args: argparse.Namespace) -> int:
    from realtime.writers import read_pose_npz

    from realtime.cli_options import check_report_paths, write_report

    if not str(args.file).lower().endswith(".npz"):
        raise UserError(f"{args.file}: stability reads .npz pose files (write one with --out OUT.npz)")
    check_report_paths(args, "json")
    frames = read_pose_npz(args.file)
    if not frames:
        raise UserError(f"{args.file} holds no frames")
    index = np.array([f.index for f in frames], np.int64)
    if np.any(np.diff(index) <= 0):
        raise UserError(f"{args.file}: frame indices are not increasing")
    joints = np.stack([f.joints_mm for f in frames]).astype(np.float64)
    trans = np.stack([f.translation_mm for f in frames]).astype(np.float64)
    ok = np.array([f.valid for f in frames], bool)
    fps = frame_rate(np.array([f.timestamp_s for f in frames]), index)
    rows: dict[str, Stability] = {}
    lags: dict[str, float] = {}
    if args.against_mediapipe:
        mp_joints, mp_ok = mediapipe_world(args.against_mediapipe, index)
        ok = ok & mp_ok
        rows["MediaPipe world landmarks"] = measure(mp_joints, ok, index, fps=fps)
        lags["MediaPipe world landmarks"] = lag_frames(joints, mp_joints, ok, index)
    rows[Path(args.file).name] = measure(joints, ok, index, trans, fps)
    if args.lag_against:
        ref = {f.index: f for f in read_pose_npz(args.lag_against)}
        ref_joints = np.stack([ref[i].joints_mm if i in ref else np.full((17, 3), np.nan) for i in index])
        ref_ok = np.array([i in ref and ref[i].valid for i in index], bool)
        lags[Path(args.lag_against).name] = lag_frames(joints, ref_joints.astype(np.float64), ok & ref_ok, index)
    w = max(len(k) for k in rows)
    print(f"clip: {_fmt(fps)} fps; accel at 30 fps = accel * (fps / 30)^2, for clips at other rates")
    print(f"{'output':<{w}}  frames  accel mm/f^2  at 30 fps  bone CV  root step mm/f: median   p95   max"
          "  depth median mm")
    for name, s in rows.items():
        print(f"{name:<{w}}  {s.frames:>6}  {_fmt(s.acceleration_mm):>12}  {_fmt(s.acceleration_30fps_mm):>9}"
              f"  {_fmt(s.bone_cv, '.3f'):>7}  "
              f"{_fmt(s.root_step_median_mm):>21} {_fmt(s.root_step_p95_mm):>5} {_fmt(s.root_step_max_mm):>5}  "
              f"{_fmt(s.depth_median_mm, '.0f'):>15}")
    for ref_name, lag in lags.items():
        print(f"lag of {Path(args.file).name} behind {ref_name}: {_fmt(lag, '+.2f')} frames "
              f"(cross-correlation of joint velocities)")
    if args.json:
        write_report(args.json, json.dumps({"rows": {k: asdict(v) for k, v in rows.items()},
                                           "lag_frames": lags}, indent=2))
    sys.stdout.flush()
    return 0
