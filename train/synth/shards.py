"""Pose sources and the sharded, resumable, deterministic writer.

Sample i of a run is a pure function of (seed, i, source): its random generator is
np.random.default_rng([seed, i]) and, for mocap, the clip/frame it shows is drawn from
np.random.default_rng([seed, i, 1]). Shard k holds samples [k*S, (k+1)*S) and is written
atomically (tmp file + rename), so a rerun skips the shards that exist and the result does
not depend on the number of workers.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import UserError
from train.synth.samples import (FIELD_DOC, SOURCE_BVH, SOURCE_H36M, PoseItem, SampleRenderer,
                                 stack_samples)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class H36MSource:
    """Rows [::every] of an npz in the staged H36M schema x the chosen cameras, each
    rendered from that file's own camera (so 2D/3D labels are in H36M's camera frames).
    Sample i = row (i // len(cameras)), camera cameras[i % len(cameras)]."""

    def __init__(self, path: str | Path, every: int = 1, cameras: tuple[int, ...] = (0, 1, 2, 3)):
        from train.h36m import camera_of, open_npz
        d = open_npz(path)
        if any(c not in (0, 1, 2, 3) for c in cameras):
            raise UserError(f"cameras must be in 0..3, got {cameras}")
        self.rows = np.arange(0, d["positions_3d"].shape[0], max(int(every), 1))
        self.pos = d["positions_3d"]
        self.subject = d["subject"]
        self.cameras = tuple(cameras)
        self.cams = {(int(s), c): camera_of(d, int(s), c) for s in np.unique(self.subject) for c in cameras}
        self.describe = {"kind": "h36m", "data": str(Path(path).resolve()), "every": int(every),
                         "cameras": list(cameras)}

    fields = FIELD_DOC

    def __len__(self) -> int:
        return len(self.rows) * len(self.cameras)

    @staticmethod
    def renderer(cfg: "RunConfig") -> SampleRenderer:
        return SampleRenderer(use_mediapipe=cfg.mediapipe, model=cfg.model)

    @staticmethod
    def collate(outputs: list[dict[str, np.ndarray]], indices: list[int]) -> dict[str, np.ndarray]:
        return stack_samples([{**s, "index": np.int64(i)} for s, i in zip(outputs, indices)])

    def item(self, i: int) -> PoseItem:
        row = int(self.rows[i // len(self.cameras)])
        cam = self.cameras[i % len(self.cameras)]
        s = int(self.subject[row])
        return PoseItem(self.pos[row].astype(np.float64), self.cams[(s, cam)], True, SOURCE_H36M,
                        subject=s, camera_index=cam, frame=row)


def _h36m_intrinsics() -> list:
    """The 4 camera models of H36M training subject 1 (for H36M-like sampled cameras);
    empty when the data is not there."""
    from train.h36m import camera_of, default_data_dir
    p = default_data_dir() / "h36m" / "h36m_train.npz"
    if not p.is_file():
        return []
    z = np.load(p)
    d = {k: z[k] for k in ("camera_subjects", "camera_R", "camera_T", "camera_f", "camera_c", "camera_k",
                           "camera_p", "image_size")}
    return [camera_of(d, int(d["camera_subjects"][0]), c) for c in range(4)]


class BvhSource:
    """`count` random frames of the BVH clips under a directory, on sampled bodies, seen by
    sampled webcam-like (70 %) or H36M-like (30 %) cameras. The mocap is converted once to
    target joints and cached in the output folder (bvh_targets.npz)."""

    def __init__(self, directory: str | Path, count: int, cache_dir: Path | None = None, seed: int = 0):
        from train.synth.bvh import bandai_targets, list_bvh, parse_bvh
        files = list_bvh(directory)
        cache = cache_dir / "bvh_targets.npz" if cache_dir else None
        names = [str(f.relative_to(directory)) for f in files]
        if cache and cache.is_file():
            z = np.load(cache)
            if list(z["clips"]) == names:
                self.targets, self.clip_of = z["targets"], z["clip_of"]
            else:
                raise UserError(f"{cache} was made from other clips; use a new --out folder")
        else:
            tg, co = [], []
            for k, f in enumerate(files):
                t = bandai_targets(parse_bvh(f))
                t[..., :2] -= t[:, :1, :2]  # centre each frame's pelvis on the world z axis
                tg.append(t.astype(np.float32))
                co.append(np.full(len(t), k, np.int32))
            self.targets, self.clip_of = np.concatenate(tg), np.concatenate(co)
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, targets=self.targets, clip_of=self.clip_of, clips=np.array(names))
        self.frame_start = np.searchsorted(self.clip_of, np.arange(len(files)))
        self.count = int(count)
        self.seed = seed
        self.h36m_cams = _h36m_intrinsics()
        self.clips = names
        self.describe = {"kind": "bvh", "dir": str(Path(directory).resolve()), "count": int(count),
                         "clips": names, "frames": int(len(self.targets))}

    fields = FIELD_DOC

    def __len__(self) -> int:
        return self.count

    renderer = staticmethod(H36MSource.renderer)
    collate = staticmethod(H36MSource.collate)

    def item(self, i: int) -> PoseItem:
        rng = np.random.default_rng([self.seed, i, 1])
        g = int(rng.integers(len(self.targets)))
        clip = int(self.clip_of[g])
        # A random turn about the vertical so each frame is seen from any side.
        a = rng.uniform(0, 2 * np.pi)
        Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        j = self.targets[g].astype(np.float64) @ Rz.T
        like = self.h36m_cams[int(rng.integers(len(self.h36m_cams)))] if self.h36m_cams else None
        return PoseItem(j, None, False, SOURCE_BVH, frame=g - int(self.frame_start[clip]), clip=clip,
                        h36m_like=like)


@dataclass
class RunConfig:
    out: Path
    seed: int = 0
    shard_size: int = 256
    mediapipe: bool = True
    workers: int = 1
    compress: bool = False
    limit: int | None = None  # render only the first `limit` samples (quick runs)
    model: str | None = None
    generator: str | None = None   # sequences: the generator whose cues are stored (None = none)
    extra: dict = field(default_factory=dict)


_W: dict = {}


def _init_worker(source, cfg: RunConfig) -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    _W["source"], _W["cfg"] = source, cfg
    _W["renderer"] = source.renderer(cfg)


def _shard_path(out: Path, k: int) -> Path:
    return out / f"shard_{k:05d}.npz"


def _identity(header: dict) -> dict:
    """The manifest fields that define the samples (everything but how many there are)."""
    src = {k: v for k, v in header.get("source", {}).items() if k != "count"}
    return {**{k: header.get(k) for k in ("format_version", "seed", "shard_size", "mediapipe", "generator")},
            "source": src}


def _shard_done(out: Path, k: int, start: int, stop: int) -> bool:
    """Shard file present with exactly samples (or clips) [start, stop) (a last shard written
    by a smaller run is re-rendered)."""
    p = _shard_path(out, k)
    if not p.is_file():
        return False
    with np.load(p) as z:
        idx = np.unique(z["index"])
    return len(idx) == stop - start and int(idx[0]) == start


def _render_shard(args: tuple[int, int, int]) -> tuple[int, int, float]:
    k, start, stop = args
    src, cfg, r = _W["source"], _W["cfg"], _W["renderer"]
    t0 = time.perf_counter()
    samples = [r.render(src.item(i), np.random.default_rng([cfg.seed, i])) for i in range(start, stop)]
    arrays = src.collate(samples, list(range(start, stop)))
    path = _shard_path(cfg.out, k)
    tmp = path.with_suffix(".tmp.npz")
    (np.savez_compressed if cfg.compress else np.savez)(tmp, **arrays)
    os.replace(tmp, path)
    return k, stop - start, time.perf_counter() - t0


def render_shards(source, cfg: RunConfig, log=print) -> dict:
    """Render all missing shards of `source` into cfg.out; returns the manifest dict."""
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    n = len(source) if cfg.limit is None else min(len(source), cfg.limit)
    S = cfg.shard_size
    header = {"format_version": FORMAT_VERSION, "source": source.describe, "seed": cfg.seed,
              "shard_size": S, "num_samples": n, "mediapipe": cfg.mediapipe}
    if cfg.generator:
        header["generator"] = cfg.generator
    mpath = out / MANIFEST
    if mpath.is_file():
        # The sample count may change (sample i does not depend on it): a set can be grown
        # with a larger --count/--limit; anything else must match.
        old = json.loads(mpath.read_text())
        if _identity(old) != _identity(header):
            raise UserError(f"{out} holds a different render set (manifest differs); use a new --out folder")
    shards = [(k, k * S, min((k + 1) * S, n)) for k in range((n + S - 1) // S)]
    todo = [s for s in shards if not _shard_done(out, *s)]
    mpath.write_text(json.dumps({**header, "fields": source.fields, "shards": [], "complete": False}, indent=1))
    log(f"render: {n} samples in {len(shards)} shards of {S}; {len(shards) - len(todo)} done, "
        f"{len(todo)} to render with {cfg.workers} worker(s), MediaPipe {'on' if cfg.mediapipe else 'off'}")
    t0 = time.perf_counter()
    done = 0
    busy = 0.0  # seconds spent inside shard rendering, summed over workers
    if todo:
        if cfg.workers <= 1:
            _init_worker(source, cfg)
            t0 = time.perf_counter()  # exclude model/body loading from the rate
            results = map(_render_shard, todo)
        else:
            import multiprocessing as mp
            pool = mp.get_context("fork").Pool(cfg.workers, _init_worker, (source, cfg))
            results = pool.imap_unordered(_render_shard, todo)
        for k, cnt, dt in results:
            done += cnt
            busy += dt
            el = time.perf_counter() - t0
            log(f"  shard {k:5d}: {cnt} samples in {dt:.1f} s; total {done} at {done / el:.1f} samples/s")
        if cfg.workers > 1:
            pool.close()
            pool.join()
        else:
            _W.pop("renderer").close()
    elapsed = time.perf_counter() - t0
    manifest = finalize_manifest(out, header, shards, source.fields)
    if done:
        # samples_per_s: wall clock incl. worker start-up; per_worker_samples_per_s: inside
        # the render loop of one process (x workers = steady-state rate).
        manifest["last_run"] = {"samples": done, "seconds": round(elapsed, 2),
                                "samples_per_s": round(done / elapsed, 2), "workers": cfg.workers,
                                "per_worker_samples_per_s": round(done / max(busy, 1e-9), 2)}
        mpath.write_text(json.dumps(manifest, indent=1))
    return manifest


def finalize_manifest(out: Path, header: dict, shards: list[tuple[int, int, int]],
                      fields: dict[str, str] = FIELD_DOC) -> dict:
    """Write the manifest of the finished shards, with MediaPipe's rates over their rows
    (samples, or frames of clips: `frames` is then the row count)."""
    entries, found, ok, from_mp, vis = [], 0, 0, 0, 0.0
    total = rows = 0
    for k, a, b in shards:
        p = _shard_path(out, k)
        if not _shard_done(out, k, a, b):
            continue
        z = np.load(p)
        entries.append({"file": p.name, "start": a, "count": b - a})
        n = len(z["mp_found"])
        found += int(z["mp_found"].sum())
        ok += int(z["mp_ok"].sum())
        from_mp += int(z["box_from_mp"].sum()) if "box_from_mp" in z.files else 0
        vis += float(z["visibility"].mean()) * n
        total += b - a
        rows += n
    stats = {"samples": total}
    if rows != total:
        stats["frames"] = rows
    if rows:
        stats["visible_joint_fraction"] = round(vis / rows, 4)
        if header["mediapipe"]:
            stats.update(mp_detection_rate=round(found / rows, 4), mp_correct_rate=round(ok / rows, 4))
            if fields is FIELD_DOC:
                stats["box_from_mp_rate"] = round(from_mp / rows, 4)
    m = {**header, "fields": fields, "shards": entries, "complete": total == header["num_samples"],
         "stats": stats}
    (out / MANIFEST).write_text(json.dumps(m, indent=1))
    return m
