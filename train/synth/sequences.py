"""Rendered sequences: one synthetic person moving through a clip, filmed by one fixed camera,
with MediaPipe in VIDEO mode over the frames at the clip's timestamps (its tracking and
smoothing then behave as in the app, which runs VIDEO mode on files and webcams).

    posestream render --sequence --data ../shared/data/h36m/h36m_val.npz --fps 30 --seconds 20 ...
    posestream render --sequence --bvh ../shared/data/bandai/dataset-2/data --count 200 --seconds 5 ...

A clip keeps everything but the pose fixed: body (girth, bone lengths), clothing colours,
light, background, occluders, blur/defocus and the noise level (its pattern is redrawn each
frame, as a camera's sensor noise). Sources:
  H36MClips  rows of a Human3.6M file, one run = one sequence seen by one of its cameras, cut
             into clips (the first `seconds` of each run, or random stretches). With --fps the
             rows are resampled to that frame rate by Catmull-Rom interpolation of the 3D
             joints (smooth, and exact on the rows); frames that fall on a row keep its index in
             `row` (-1 between rows), which is where metrics are computed.
  BvhClips   stretches of the Bandai-Namco BVH clips (30 fps) on sampled bodies, turned about
             the vertical, seen by one sampled camera per clip (webcam-like or H36M-like).
Per frame the shards hold the labels (ground-truth 2D and 3D), MediaPipe's 33 landmarks (image
px, visibility, world mm), its 17 joints (engines.landmarks), the detected flag, timestamps and
the clip/sequence/camera keys; with a generator (`--cues`), the Final generator's coarse 3D and
FBI probabilities on the crop the app would cut from MediaPipe's joints (instead of storing
crops: 2 KB a frame rather than 50-200 KB). SEQUENCE_FIELDS documents every array.
Shards hold whole clips (train.synth.shards: resumable, deterministic given the seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.camera import Camera, project_camera, world_to_camera
from engines.errors import UserError
from engines.skeleton import NUM_JOINTS, bone_lengths, root_relative
from train.synth.samples import MP_LIMB_JOINTS, MP_LIMB_LANDMARKS, SOURCE_BVH, SOURCE_H36M

NUM_LANDMARKS = 33


@dataclass(frozen=True)
class Clip:
    """T frames of one person. joints_world (T, 17, 3) mm in a z-up world; times_ms (T,)
    from 0; row (T,) int the H36M row a frame shows (-1 between rows, or for mocap);
    camera None = sample one (h36m_like: intrinsics to copy for an H36M-like camera)."""

    joints_world: np.ndarray
    times_ms: np.ndarray
    row: np.ndarray
    camera: Camera | None
    keep_lengths: bool
    source: int
    subject: int = -1
    camera_index: int = -1
    seq: int = -1
    action: int = -1
    h36m_like: Camera | None = None


def catmull_rom(times: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom interpolation of values (N, ...) at equally spaced times (N,)
    to query times (M,) inside [times[0], times[-1]]: C1-smooth, exact at the samples, end
    segments with the end sample repeated. Returns (M, ...) float64."""
    times = np.asarray(times, np.float64)
    v = np.asarray(values, np.float64)
    n = len(times)
    if n == 1:
        return np.repeat(v, len(query), 0)
    step = times[1] - times[0]
    u = np.clip((np.asarray(query, np.float64) - times[0]) / step, 0, n - 1)
    i = np.minimum(np.floor(u).astype(np.int64), n - 2)
    s = (u - i).reshape((-1,) + (1,) * (v.ndim - 1))
    p0, p1, p2, p3 = (v[np.clip(i + k, 0, n - 1)] for k in (-1, 0, 1, 2))
    return 0.5 * ((2 * p1) + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * s**3)


class H36MClips:
    """Clips of the runs (sequence x camera) of a Human3.6M file, rendered from that file's own
    cameras. fps None keeps the file's rows (its own rate); else the rows are resampled to fps.
    seconds None = whole runs; else clips of that length: the first of each run
    (start="first") or `clips` stretches at random starts (start="random", seeded)."""

    def __init__(self, path: str | Path, cameras: tuple[int, ...] = (0, 1, 2, 3), fps: float | None = None,
                 seconds: float | None = None, clips: int = 1, start: str = "first", seed: int = 0):
        from train.h36m import camera_of, open_npz, row_sequence, row_spacing_ms

        d = open_npz(path)
        if any(c not in (0, 1, 2, 3) for c in cameras):
            raise UserError(f"cameras must be in 0..3, got {cameras}")
        if start not in ("first", "random") or clips < 1 or (fps is not None and fps <= 0) \
                or (seconds is not None and seconds <= 0):
            raise UserError("need fps > 0, seconds > 0, clips >= 1 and a start of first|random")
        self.pos, self.subject, self.action = d["positions_3d"], d["subject"], d["action"]
        self.row_ms = row_spacing_ms(path)
        self.frame_ms = 1000.0 / fps if fps else self.row_ms
        seq = row_sequence(d)
        first = [int(a) for a in d["seq_start"]]
        bounds = list(zip(first, first[1:] + [len(seq)]))
        self.cams = {(int(s), c): camera_of(d, int(s), c) for s in np.unique(self.subject) for c in cameras}
        self.items: list[tuple[int, int, float, float]] = []    # (run first row, camera, start ms, length ms)
        self.seq_of_row = seq
        for q, (a, b) in enumerate(bounds):
            dur = (b - a - 1) * self.row_ms
            for k, cam in enumerate(cameras):
                length = dur if seconds is None else min(dur, seconds * 1000.0)
                if start == "first":
                    self.items.append((a, cam, 0.0, length))
                    continue
                rng = np.random.default_rng([seed, q, cam, 7])
                for t0 in rng.uniform(0, dur - length, clips) if dur > length else [0.0] * clips:
                    self.items.append((a, cam, float(t0), length))
        self.run_end = {a: b for a, b in bounds}
        self.describe = {"kind": "h36m_clips", "data": str(Path(path).resolve()), "cameras": list(cameras),
                         "fps": fps, "seconds": seconds, "clips": clips, "start": start, "row_ms": self.row_ms}

    fields = property(lambda self: SEQUENCE_FIELDS)

    def __len__(self) -> int:
        return len(self.items)

    def renderer(self, cfg) -> "ClipRenderer":
        return ClipRenderer(cfg.mediapipe, cfg.model, cfg.generator)

    @staticmethod
    def collate(outputs: list[dict[str, np.ndarray]], indices: list[int]) -> dict[str, np.ndarray]:
        return concat_clips(outputs, indices)

    def item(self, i: int) -> Clip:
        a, cam, t0, length = self.items[i]
        b = self.run_end[a]
        times = np.arange(0.0, length + 1e-6, self.frame_ms)          # clip time
        row_t = t0 + times                                             # run time
        lo = int(np.clip(np.floor(row_t[0] / self.row_ms) - 1, 0, b - a - 1))
        hi = int(np.clip(np.ceil(row_t[-1] / self.row_ms) + 2, lo + 1, b - a))
        joints = catmull_rom(np.arange(lo, hi) * self.row_ms, self.pos[a + lo:a + hi], row_t)
        on_row = np.abs(row_t / self.row_ms - np.round(row_t / self.row_ms)) < 1e-6
        row = np.where(on_row, a + np.round(row_t / self.row_ms).astype(np.int64), -1).astype(np.int32)
        s = int(self.subject[a])
        return Clip(joints, times, row, self.cams[(s, cam)], True, SOURCE_H36M, subject=s, camera_index=cam,
                    seq=int(self.seq_of_row[a]), action=int(self.action[a]))


class BvhClips:
    """`count` clips of `seconds` from random BVH files (Bandai-Namco naming) at random starts,
    on sampled bodies turned about the vertical, each seen by one sampled camera (webcam-like,
    or H36M-like 30 % of the time). Mocap is converted once and cached (bvh_clip_targets.npz)."""

    def __init__(self, directory: str | Path, count: int, seconds: float = 5.0, cache_dir: Path | None = None,
                 seed: int = 0):
        from train.synth.bvh import bandai_targets, list_bvh, parse_bvh
        from train.synth.shards import _h36m_intrinsics

        files = list_bvh(directory)
        names = [str(f.relative_to(directory)) for f in files]
        cache = cache_dir / "bvh_clip_targets.npz" if cache_dir else None
        if cache and cache.is_file():
            z = np.load(cache)
            if list(z["clips"]) != names:
                raise UserError(f"{cache} was made from other clips; use a new --out folder")
            self.targets, self.clip_of, self.frame_ms = z["targets"], z["clip_of"], z["frame_ms"]
        else:
            tg, co, ft = [], [], []
            for k, f in enumerate(files):
                bvh = parse_bvh(f)
                tg.append(bandai_targets(bvh).astype(np.float32))
                co.append(np.full(len(tg[-1]), k, np.int32))
                ft.append(1000.0 * bvh.frame_time)
            self.targets, self.clip_of, self.frame_ms = np.concatenate(tg), np.concatenate(co), np.array(ft)
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, targets=self.targets, clip_of=self.clip_of, frame_ms=self.frame_ms,
                         clips=np.array(names))
        self.first = np.searchsorted(self.clip_of, np.arange(len(files)))
        self.length = np.bincount(self.clip_of, minlength=len(files))
        self.count, self.seconds, self.seed = int(count), float(seconds), seed
        self.h36m_cams = _h36m_intrinsics()
        self.describe = {"kind": "bvh_clips", "dir": str(Path(directory).resolve()), "count": int(count),
                         "seconds": float(seconds), "clips": names}

    fields = property(lambda self: SEQUENCE_FIELDS)

    def __len__(self) -> int:
        return self.count

    renderer = H36MClips.renderer
    collate = staticmethod(H36MClips.collate)

    def item(self, i: int) -> Clip:
        rng = np.random.default_rng([self.seed, i, 1])
        k = int(rng.integers(len(self.first)))
        n = max(1, min(int(self.length[k]), int(round(self.seconds * 1000.0 / self.frame_ms[k])) + 1))
        s = int(rng.integers(self.length[k] - n + 1))
        j = self.targets[self.first[k] + s:self.first[k] + s + n].astype(np.float64)
        j[..., :2] -= j[:1, :1, :2]   # the clip starts over the world origin and may walk away from it
        a = rng.uniform(0, 2 * np.pi)
        Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        like = self.h36m_cams[int(rng.integers(len(self.h36m_cams)))] if self.h36m_cams else None
        return Clip(j @ Rz.T, np.arange(n) * float(self.frame_ms[k]), np.full(n, -1, np.int32), None, False,
                    SOURCE_BVH, seq=k, h36m_like=like)


class ClipRenderer:
    """Renders clips (see module docstring). generator: a generator model (name or path) run on
    the crop the app would cut, for the coarse-3D and FBI cues; None = no cues."""

    def __init__(self, use_mediapipe: bool = True, model: str | Path | None = None, generator: str | None = None):
        from train.synth.samples import SampleRenderer

        self.base = SampleRenderer(use_mediapipe=False)
        self.use_mediapipe, self.model = use_mediapipe, model
        self.generator = None
        if generator:
            from engines.backends import open_backend

            self.generator = open_backend(generator, "auto", threads=1)

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()

    def render(self, clip: Clip, rng: np.random.Generator) -> dict[str, np.ndarray]:
        from engines.crop import box_from_joints
        from engines.landmarks import landmarks_to_joints_2d
        from train.synth.pose import sample_lengths, with_lengths
        from train.synth.samples import MediaPipe2D, _visibility
        from train.synth.scene import camera_affines, sample_albedo, sample_camera, sample_light, sample_scene

        r = self.base
        T = len(clip.times_ms)
        targets = np.asarray(clip.joints_world, np.float64)
        if clip.keep_lengths:
            stature = bone_lengths(targets[0]).sum() / r.rest_lengths.sum()
            girth = float(rng.uniform(0.9, 1.15) * stature)
        else:
            lengths, girth = sample_lengths(r.body, rng)
            targets = np.stack([with_lengths(t, lengths) for t in targets])
        posed = [r.solver.solve(t, girth) for t in targets]
        joints = np.stack([p.joints for p in posed])
        h36m_like = clip.h36m_like if (clip.h36m_like is not None and rng.random() < 0.3) else None
        cam = clip.camera or sample_camera(rng, joints.reshape(-1, 3), h36m_like)
        jc = world_to_camera(joints.reshape(-1, 3), cam.R, cam.T).reshape(T, NUM_JOINTS, 3)
        uv = project_camera(jc.reshape(-1, 3), cam.f, cam.c, cam.k, cam.p).reshape(T, NUM_JOINTS, 2)
        W, H = cam.size
        albedo, light = sample_albedo(r.body, rng), sample_light(rng)
        fin = np.isfinite(uv).all(-1) & (jc[..., 2] > 0)
        lo, hi = (uv[fin].min(0), uv[fin].max(0)) if fin.any() else (np.zeros(2), np.array([W, H], float))
        scene = sample_scene(rng, (W, H), (lo[0], lo[1], hi[0], hi[1]))
        s = min(1.0, MediaPipe2D.MAX_SIDE / max(W, H))
        fw, fh = max(int(round(W * s)), 1), max(int(round(H * s)), 1)
        vp = np.array([[fw / W, 0, 0.5 * fw / W - 0.5], [0, fh / H, 0.5 * fh / H - 0.5]])
        out = {k: np.full((T,) + shape, np.nan, np.float32) for k, shape in (
            ("mp_landmarks_image", (NUM_LANDMARKS, 3)), ("mp_world_mm", (NUM_LANDMARKS, 3)),
            ("mp_joints_2d", (NUM_JOINTS, 2)), ("coarse_mm", (NUM_JOINTS, 3)), ("fbi_prob", (14, 3)))}
        out["mp_conf"] = np.zeros((T, NUM_JOINTS), np.float32)
        found = np.zeros(T, bool)
        ok = np.zeros(T, bool)
        vis = np.zeros((T, NUM_JOINTS), bool)
        # A fresh VIDEO-mode landmarker per clip: its tracking starts cold, as the app's does on a new file.
        mp = MediaPipe2D(self.model, video=True) if self.use_mediapipe else None
        try:
            for t in range(T):
                A = camera_affines(posed[t].affine, cam)
                frame, zbuf, idbuf, occ = r._draw(A, cam, vp, (fw, fh), scene, albedo, light, rng)
                inside = (uv[t, :, 0] >= 0) & (uv[t, :, 0] <= W - 1) & (uv[t, :, 1] >= 0) \
                    & (uv[t, :, 1] <= H - 1) & (jc[t, :, 2] > 0)
                uv_buf = uv[t] * vp[:, 0:2].diagonal() + vp[:, 2]
                vis[t] = _visibility(uv_buf, jc[t, :, 2], zbuf, idbuf, r.allowed, occ, r.radius * girth, inside)
                det = mp.detect_video(frame, int(round(clip.times_ms[t]))) if mp is not None else None
                if det is None:
                    continue
                lm, world = det
                lm[:, 0] = (lm[:, 0] - vp[0, 2]) / vp[0, 0]
                lm[:, 1] = (lm[:, 1] - vp[1, 2]) / vp[1, 1]
                j17, conf = landmarks_to_joints_2d(lm[:, :2], np.clip(lm[:, 2], 0, 1))
                found[t] = True
                out["mp_landmarks_image"][t], out["mp_world_mm"][t] = lm, world
                out["mp_joints_2d"][t], out["mp_conf"][t] = j17, conf
                err = np.linalg.norm(lm[list(MP_LIMB_LANDMARKS), :2] - uv[t, list(MP_LIMB_JOINTS)], axis=1)
                ok[t] = bool(np.median(err) < 0.1 * max(np.ptp(uv[t, :, 1]), np.ptp(uv[t, :, 0])))
                if self.generator is not None:
                    try:
                        box = box_from_joints(j17)
                    except ValueError:
                        continue
                    crop = r._draw(A, cam, box.affine, (box.size, box.size), scene, albedo, light, rng)[0]
                    xs = box.crop_to_image(np.stack([np.arange(box.size)] * 2, 1).astype(np.float64))
                    crop[~((xs[:, 1] >= -0.5) & (xs[:, 1] <= H - 0.5))] = 0
                    crop[:, ~((xs[:, 0] >= -0.5) & (xs[:, 0] <= W - 0.5))] = 0
                    img = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)
                    g = self.generator.run({"image": img,
                                            "joints_crop": box.image_to_crop(j17)[None].astype(np.float32)})
                    out["coarse_mm"][t], out["fbi_prob"][t] = g["coarse_mm"][0], g["fbi_prob"][0]
        finally:
            if mp is not None:
                mp.close()
        from engines.skeleton import fbi_states

        return {
            **out, "mp_found": found, "mp_ok": ok, "visibility": vis,
            "joints_2d_image": uv.astype(np.float32),
            "joints_3d": root_relative(jc).astype(np.float32),
            "root_cam": jc[:, 0].astype(np.float32),
            "fbi": fbi_states(jc),
            "time_ms": np.asarray(clip.times_ms, np.float64),
            "frame_in_clip": np.arange(T, dtype=np.int32),
            "row": np.asarray(clip.row, np.int32),
            **{k: np.repeat(np.asarray(v)[None], T, 0) for k, v in (
                ("f", np.asarray(cam.f, np.float32)), ("c", np.asarray(cam.c, np.float32)),
                ("k", np.asarray(cam.k, np.float32)), ("p", np.asarray(cam.p, np.float32)),
                ("cam_R", np.asarray(cam.R, np.float32)), ("cam_T", np.asarray(cam.T, np.float32)),
                ("image_size", np.array(cam.size, np.int32)), ("source", np.int8(clip.source)),
                ("subject", np.int16(clip.subject)), ("camera_index", np.int8(clip.camera_index)),
                ("seq", np.int32(clip.seq)), ("action", np.int16(clip.action)), ("girth", np.float32(girth)))},
        }


SEQUENCE_FIELDS: dict[str, str] = {
    "index": "int64 (N,) the clip this frame belongs to (frames of a clip are consecutive, in time order)",
    "frame_in_clip": "int32 (N,) frame number within the clip",
    "time_ms": "float64 (N,) frame time within the clip, ms (MediaPipe's VIDEO timestamps, rounded to ms)",
    "row": "int32 (N,) the Human3.6M row this frame shows exactly, -1 between rows or for mocap",
    "joints_2d_image": "float32 (N,17,2) full-image px, exact projection (with the camera's distortion)",
    "joints_3d": "float32 (N,17,3) mm, camera coords, pelvis-relative",
    "root_cam": "float32 (N,3) mm, pelvis in camera coords",
    "fbi": "int8 (N,14) engines.skeleton.fbi_states of the camera-frame joints",
    "visibility": "bool (N,17) in image, not occluded, not self-occluded (at MediaPipe's frame size)",
    "mp_found": "bool (N,) MediaPipe (VIDEO mode) returned a pose on this frame",
    "mp_ok": "bool (N,) found and median limb-joint error < 10% of the person's 2D extent",
    "mp_landmarks_image": "float32 (N,33,3) MediaPipe landmarks: u px, v px (full image, pixel centres), visibility; NaN if none",
    "mp_world_mm": "float32 (N,33,3) MediaPipe world landmarks, mm (hip-centred, x right, y down, z away); NaN if none",
    "mp_joints_2d": "float32 (N,17,2) MediaPipe's 17 joints (engines.landmarks), full-image px; NaN if none",
    "mp_conf": "float32 (N,17) their confidence (0 if none)",
    "coarse_mm": "float32 (N,17,3) the generator's coarse 3D on the app's crop (NaN without MediaPipe or --cues)",
    "fbi_prob": "float32 (N,14,3) the generator's FBI probabilities (NaN without MediaPipe or --cues)",
    "f": "float32 (N,2) px", "c": "float32 (N,2) px", "k": "float32 (N,3) radial", "p": "float32 (N,2) tangential",
    "cam_R": "float32 (N,3,3) world->camera", "cam_T": "float32 (N,3) camera centre, world mm",
    "image_size": "int32 (N,2) width, height of the full image",
    "source": "int8 (N,) 0 Human3.6M, 1 BVH mocap", "subject": "int16 (N,) H36M subject or -1",
    "camera_index": "int8 (N,) H36M camera 0..3 or -1 (sampled)",
    "seq": "int32 (N,) H36M sequence index, or BVH file index (manifest source.clips)",
    "action": "int16 (N,) H36M action index or -1", "girth": "float32 (N,) body girth factor",
}


def concat_clips(clips: list[dict[str, np.ndarray]], indices: list[int]) -> dict[str, np.ndarray]:
    """Per-clip frame arrays and the clips' indices -> one shard (frames of all clips, clip
    after clip; `index` names each frame's clip)."""
    out = {k: np.concatenate([c[k] for c in clips]) for k in clips[0]}
    out["index"] = np.concatenate([np.full(len(c["time_ms"]), i, np.int64) for c, i in zip(clips, indices)])
    return out
