"""Synthetic multi-person sequences with ground-truth identities, for measuring the tracker
and multi-person lifting (`--people N`).

A *scenario* scripts 2-4 people in front of a fixed camera: walkers crossing the view at
different depths (so the one behind is hidden while they pass), people standing while
others walk in front of them, two people walking side by side. Motion comes from Human3.6M
S9 (validation subject, never trained on): a walker takes the gait of a Walking/WalkDog/
WalkTogether sequence, with its heading removed (the smoothed facing direction from the hip
line) and re-applied along a straight path, at the sequence's own speed; a stander keeps a
Discussion/Directions/Phoning/Waiting sequence in place, turned to face a given direction.
The 10 Hz S9 rows are linearly interpolated to the sequence's frame rate.

Each person is a MakeHuman body with sampled proportions and clothes (train.synth.scene), all
rendered by `render_body` against one background and light, then composed per pixel by
depth, so people occlude one another exactly. Each person is also written *alone* (same
scene, camera and poses): the single-person reference for "per-person MPJPE against the
single-person figure on the same poses".

Written per scenario into DIR/NAME/:
    scene.avi          everyone (MJPG, quality 95), fps FPS
    person{k}.avi      person k alone
    truth.npz          joints_cam_mm (F, P, 17, 3) camera space mm (x right, y down, z forward);
                       joints_2d_px (F, P, 17, 2); occlusion (F, P) fraction of the person's
                       pixels hidden by other people (1 when none of them is in the image);
                       in_view (F, P) fraction of the 17 joints inside the image; f, c (2,) px
                       (undistorted pinhole, 60 degrees horizontal: the app's default camera);
                       image_size (2,) w, h; fps; person_ids (P,) = 0..P-1.

    python -m train.synth.multi --out data_out/multi [--frames 150] [--scenario NAME ...]
    python -m train.synth.multi --set dev --out data_out/multi_dev --frames 120   (for tuning)
    python -m realtime.track_eval data_out/multi      (runs the app on them: the figures)
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.camera import Camera, project_camera, world_to_camera
from engines.skeleton import JOINT_INDEX, NUM_JOINTS

DEFAULT_H36M = Path(__file__).resolve().parents[3] / "shared" / "data" / "h36m" / "h36m_val.npz"
FPS = 30.0
IMAGE_SIZE = (960, 540)
FOV_DEG = 60.0
CAMERA_HEIGHT_MM = 1500.0
CAMERA_PITCH_DEG = 6.0        # looking slightly down
HEADING_SMOOTH_S = 1.0        # window of the moving average that gives a walker's facing
WALK_ACTIONS = ("Walking", "WalkDog", "WalkTogether")
STAND_ACTIONS = ("Discussion", "Directions", "Phoning", "Waiting", "Greeting")


@dataclass(frozen=True)
class Person:
    """One person's script. kind "walk": from `start` (x, y) mm on the floor along
    `heading_deg` (0 = +x, the camera's right; 90 = +y, away from the camera) at the source
    sequence's speed. kind "stand": at `start`, facing `heading_deg`. `action` picks the S9
    sequence (the `take`-th of that action), `delay_s` when the person starts moving (a
    walker stands still before that)."""

    kind: str
    start: tuple[float, float]
    heading_deg: float
    action: str
    take: int = 0
    delay_s: float = 0.0


# World: z up, floor at z = 0, the camera at (0, 0, CAMERA_HEIGHT_MM) looking along +y.
SCENARIOS: dict[str, tuple[Person, ...]] = {
    # Two walkers cross the view in opposite directions, the nearer one hiding the other.
    "cross2": (Person("walk", (-2600, 4200), 0, "Walking", 0),
               Person("walk", (2800, 5800), 180, "Walking", 1)),
    # As cross2, and a third person standing in front of the far walker's path.
    "cross3": (Person("walk", (-2600, 4400), 0, "Walking", 1),
               Person("walk", (3000, 6200), 180, "WalkDog", 0),
               Person("stand", (800, 3600), 250, "Discussion", 0)),
    # Four people: two crossing pairs at different depths and times, one standing at the side.
    "cross4": (Person("walk", (-2600, 4000), 0, "Walking", 0),
               Person("walk", (2900, 5600), 180, "WalkTogether", 0),
               Person("walk", (-3400, 7000), 0, "WalkDog", 1, 0.8),
               Person("stand", (-1300, 3200), 300, "Phoning", 0)),
    # Two people walking side by side, one slightly behind the other (long partial occlusion).
    "together2": (Person("walk", (-2700, 4300), 0, "WalkTogether", 1),
                  Person("walk", (-3100, 5000), 0, "Walking", 0)),
}

# A development set for tuning the tracker and the detection logic (`--set dev`): other
# paths, depths, speeds and people, other seeds, so that the figures on SCENARIOS stay a test.
DEV_SCENARIOS: dict[str, tuple[Person, ...]] = {
    # Two walkers cross, the far one going right this time, the near one starting later.
    "dev_cross2": (Person("walk", (2700, 4600), 180, "WalkDog", 1, 0.3),
                   Person("walk", (-2900, 6000), 0, "WalkTogether", 0)),
    # Three walkers: two crossing, the third following the second further back.
    "dev_cross3": (Person("walk", (-2500, 3800), 0, "WalkTogether", 1),
                   Person("walk", (2600, 5200), 180, "Walking", 0),
                   Person("walk", (3200, 6800), 180, "Walking", 1, 0.6)),
    # Four people: three crossing at three depths and one standing in the middle distance.
    "dev_cross4": (Person("walk", (-2700, 3600), 0, "Walking", 1),
                   Person("walk", (2800, 5000), 180, "WalkDog", 0),
                   Person("walk", (-3000, 6400), 0, "WalkTogether", 0, 0.5),
                   Person("stand", (1100, 4300), 220, "Waiting", 0)),
    # Two people walking side by side to the left, the far one partly behind the near one.
    "dev_together2": (Person("walk", (2600, 4000), 180, "Walking", 1),
                      Person("walk", (3000, 4700), 180, "WalkTogether", 0)),
}
SETS = {"test": SCENARIOS, "dev": DEV_SCENARIOS}


# --------------------------------------------------------------------------- motion
def _facing_yaw(joints: np.ndarray) -> np.ndarray:
    """(F,) yaw (radians, about z) of the facing direction from the hip line of (F, 17, 3)
    z-up joints: facing = hips (left - right) turned by -90 degrees."""
    h = joints[:, JOINT_INDEX["l_hip"], :2] - joints[:, JOINT_INDEX["r_hip"], :2]
    return np.arctan2(-h[:, 0], h[:, 1])


def _rotz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    R = np.zeros(np.shape(a) + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 1, 0], R[..., 1, 1], R[..., 2, 2] = c, -s, s, c, 1.0
    return R


def resample(rows: np.ndarray, src_hz: float, n: int, fps: float) -> np.ndarray:
    """(N, 17, 3) rows at src_hz -> (n, 17, 3) at fps by linear interpolation (the last row
    repeats if the source is too short)."""
    t = np.arange(n) / fps * src_hz
    i0 = np.clip(np.floor(t).astype(int), 0, len(rows) - 1)
    i1 = np.clip(i0 + 1, 0, len(rows) - 1)
    w = np.clip(t - i0, 0.0, 1.0)[:, None, None]
    return rows[i0] * (1 - w) + rows[i1] * w


def busiest_window(source: np.ndarray, n: int) -> int:
    """Start of the n-frame window of (N, 17, 3) rows whose root ends furthest from where it
    started (a walker's straightest stretch; 0 if the source is shorter than n)."""
    if len(source) <= n:
        return 0
    net = np.linalg.norm(source[n - 1:, 0, :2] - source[: len(source) - n + 1, 0, :2], axis=1)
    return int(np.argmax(net))


def script_motion(person: Person, source: np.ndarray, n: int, fps: float) -> np.ndarray:
    """(n, 17, 3) world mm (z up) joints of a scripted person from its source rows (at fps):
    a walker takes the source's n frames whose root gets furthest, a stander the first n."""
    start = busiest_window(source, n) if person.kind == "walk" else 0
    src = resample(source[start:], fps, n, fps).astype(np.float64)
    root = src[:, 0].copy()
    rel = src - root[:, None]
    yaw = _facing_yaw(src)
    k = max(1, int(round(HEADING_SMOOTH_S * fps)))
    yaw_s = np.convolve(np.unwrap(yaw), np.ones(k) / k, mode="same")
    yaw_s[: k // 2] = yaw_s[k // 2]
    yaw_s[-(k // 2):] = yaw_s[-(k // 2) - 1]
    heading = np.deg2rad(person.heading_deg)
    delay = int(round(person.delay_s * fps))
    out = np.empty_like(src)
    if person.kind == "walk":
        step = np.linalg.norm(np.diff(root[:, :2], axis=0), axis=1)
        dist = np.concatenate([[0.0], np.cumsum(step)])
        dist = np.concatenate([np.zeros(delay), dist[: n - delay]]) if delay else dist
        R = _rotz(heading - yaw_s)
        d = np.array([np.cos(heading), np.sin(heading)])
        out = np.einsum("fij,fkj->fki", R, rel)
        out[..., :2] += (np.asarray(person.start) + dist[:, None] * d)[:, None, :]
        out[..., 2] += root[:, None, 2]
        if delay:  # standing still (the first pose) before starting to walk
            out[:delay] = out[delay]
    elif person.kind == "stand":
        R = _rotz(heading - yaw_s[0])
        out = np.einsum("ij,fkj->fki", R, src - [root[0, 0], root[0, 1], 0.0])
        out[..., :2] += np.asarray(person.start)
    else:
        raise ValueError(f"unknown person kind {person.kind!r}")
    return out


def s9_sources(path: Path, fps: float) -> dict[str, list[np.ndarray]]:
    """action name -> list of S9 sequences (each (N, 17, 3) world mm, resampled to fps)."""
    d = np.load(path)
    names = [str(a) for a in d["action_names"]]
    starts = list(d["seq_start"]) + [len(d["positions_3d"])]
    src_hz = 50.0 / float(d["frame_step"])
    out: dict[str, list[np.ndarray]] = {}
    for q in range(len(starts) - 1):
        a, b = starts[q], starts[q + 1]
        if int(d["subject"][a]) != 9:
            continue
        action = names[int(d["action"][a])]
        n = int((b - a - 1) / src_hz * fps) + 1
        out.setdefault(action, []).append(resample(d["positions_3d"][a:b], src_hz, n, fps))
    return out


def scenario_camera(size: tuple[int, int] = IMAGE_SIZE, fov_deg: float = FOV_DEG) -> Camera:
    """The fixed camera of every scenario: the app's default pinhole (fov_deg horizontal,
    principal point at the centre), CAMERA_HEIGHT_MM up, looking along +y, tilted down."""
    from train.synth.scene import look_at

    pin = Camera.pinhole(*size, fov_deg)
    centre = np.array([0.0, 0.0, CAMERA_HEIGHT_MM])
    target = centre + [0.0, 1000.0, -1000.0 * np.tan(np.deg2rad(CAMERA_PITCH_DEG))]
    return Camera(R=look_at(centre, target), T=centre, f=pin.f, c=pin.c, k=pin.k, p=pin.p, size=pin.size)


# --------------------------------------------------------------------------- rendering
def render_scenario(name: str, people: tuple[Person, ...], out_dir: Path, frames: int, seed: int,
                    h36m: Path = DEFAULT_H36M, fps: float = FPS, log=print) -> Path:
    """Render one scenario into out_dir/name (module docstring); returns that folder."""
    import cv2

    from train.synth.body import load_body
    from train.synth.pose import PoseSolver, sample_lengths, with_lengths
    from train.synth.scene import (Effects, camera_affines, degrade, draw_background, render_body, sample_albedo,
                                   sample_light, sample_scene)

    rng = np.random.default_rng(seed)
    sources = s9_sources(h36m, fps)
    motion = []
    for p in people:
        seqs = sources[p.action]
        motion.append(script_motion(p, seqs[p.take % len(seqs)], frames, fps))
    body = load_body()
    solver = PoseSolver(body)
    cam = scenario_camera()
    W, H = cam.size
    vp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    shapes = [sample_lengths(body, rng) for _ in people]
    albedo = [sample_albedo(body, rng) for _ in people]
    light = sample_light(rng)
    scene = sample_scene(rng, (W, H), (0.0, 0.0, float(W), float(H)), occluder_prob=0.0)
    scene = type(scene)(scene.background, (), Effects(0.0, 0.0, 0.0, 2.0))
    bg = draw_background(scene, (W, H), vp, (W, H))
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    writers = [cv2.VideoWriter(str(folder / f), fourcc, fps, (W, H))
               for f in ["scene.avi"] + [f"person{k}.avi" for k in range(len(people))]]
    for w in writers:
        w.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    P = len(people)
    J = np.zeros((frames, P, NUM_JOINTS, 3), np.float32)
    UV = np.zeros((frames, P, NUM_JOINTS, 2), np.float32)
    occ = np.ones((frames, P), np.float32)
    inview = np.zeros((frames, P), np.float32)
    t0 = time.perf_counter()
    try:
        for f in range(frames):
            imgs, zbufs = [], []
            for k in range(P):
                lengths, girth = shapes[k]
                posed = solver.solve(with_lengths(motion[k][f], lengths), girth)
                jc = world_to_camera(posed.joints, cam.R, cam.T)
                uv = project_camera(jc, cam.f, cam.c, cam.k, cam.p)
                J[f, k], UV[f, k] = jc, uv
                inview[f, k] = np.mean((uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
                                       & (jc[:, 2] > 0))
                img, zbuf, _ = render_body(body, camera_affines(posed.affine, cam), cam, vp, bg, albedo[k], light)
                imgs.append(img)
                zbufs.append(zbuf)
            z = np.stack(zbufs)
            front = np.argmin(z, axis=0)
            covered = np.isfinite(z.min(axis=0))
            comp = bg.copy()
            for k in range(P):
                own = np.isfinite(z[k])
                sel = covered & (front == k)
                comp[sel] = imgs[k][sel]
                occ[f, k] = 1.0 - sel.sum() / own.sum() if own.any() else 1.0
            frame_rng = np.random.default_rng([seed, f])
            for w, img in zip(writers, [comp] + imgs):
                w.write(degrade(img, scene.effects, frame_rng, 1.0)[:, :, ::-1])
            if (f + 1) % 30 == 0:
                log(f"  {name}: {f + 1}/{frames} frames ({(time.perf_counter() - t0) / (f + 1):.2f} s/frame)")
    finally:
        for w in writers:
            w.release()
    np.savez(folder / "truth.npz", joints_cam_mm=J, joints_2d_px=UV, occlusion=occ, in_view=inview,
             f=np.asarray(cam.f, np.float64), c=np.asarray(cam.c, np.float64), image_size=np.array(cam.size),
             fps=np.float64(fps), person_ids=np.arange(P))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.synth.multi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (one subfolder per scenario)")
    p.add_argument("--frames", type=int, default=150, help="frames per scenario (default 150 = 5 s)")
    p.add_argument("--set", default="test", choices=sorted(SETS),
                   help="test: the scenarios the figures are reported on; dev: others, for tuning (default test)")
    p.add_argument("--scenario", action="append", help="only these of the set (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="base seed (the dev set adds 100)")
    p.add_argument("--h36m", default=str(DEFAULT_H36M), help="Human3.6M file with S9 (default the shared val set)")
    args = p.parse_args(argv)
    scenarios = SETS[args.set]
    unknown = sorted(set(args.scenario or ()) - set(scenarios))
    if unknown:
        p.error(f"no scenario {', '.join(unknown)} in the {args.set} set (it has {', '.join(sorted(scenarios))})")
    base = args.seed + (100 if args.set == "dev" else 0)
    for name in args.scenario or sorted(scenarios):
        t0 = time.perf_counter()
        seed = base + sorted(scenarios).index(name)
        folder = render_scenario(name, scenarios[name], Path(args.out), args.frames, seed, Path(args.h36m))
        print(f"{folder}: {len(scenarios[name])} people, {args.frames} frames in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
