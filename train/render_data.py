"""Render sets (train.synth) as in-memory training/evaluation arrays for the generator,
the discriminator and the refiner.

    rs = load_render_set("data_out/synth_s9", h36m_npz="../shared/data/h36m/h36m_val.npz")

Reading 25k crops out of compressed shards takes minutes, so the first load writes a cache
next to the shards (`gen_cache_v1.npz`, uncompressed; images already pooled to the model's
128x128) that later loads read in seconds. The cache is rebuilt when the manifest changes.

The 2D inputs of a sample, all in 256-crop pixels (B, 17, 2):
  gt2d   the exact projection of the 3D labels
  mp2d   MediaPipe on the render (NaN where MediaPipe found nobody: mp_found False)
  sh2d   for Human3.6M-pose renders only: the stacked-hourglass detection of the same
         frame and camera (train.h36m.sh_to_17), through the sample's crop box; NaN otherwise
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from engines.crop import CropBox
from engines.errors import UserError

CACHE_NAME = "gen_cache_v1.npz"


@dataclass(frozen=True)
class RenderSet:
    """N samples. Units: mm for 3D, 256-crop px for 2D unless named _image."""

    images: np.ndarray      # (N, 128, 128, 3) uint8, crops pooled 2x (engines.generator)
    gt2d: np.ndarray        # (N, 17, 2) float32
    mp2d: np.ndarray        # (N, 17, 2) float32, NaN if no MediaPipe pose
    sh2d: np.ndarray        # (N, 17, 2) float32, NaN unless a Human3.6M render
    joints_3d: np.ndarray   # (N, 17, 3) float32 root-relative camera coords
    root_cam: np.ndarray    # (N, 3) float32
    fbi: np.ndarray         # (N, 14) int8
    box: np.ndarray         # (N, 3) float32 cx, cy, side (image px)
    f: np.ndarray           # (N, 2) float32 px
    c: np.ndarray           # (N, 2) float32 px
    mp_found: np.ndarray    # (N,) bool
    source: np.ndarray      # (N,) int (train.synth.samples.SOURCE_*)
    subject: np.ndarray     # (N,) int, -1 for mocap
    action: np.ndarray      # (N,) int index into action_names, -1 unknown
    action_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.gt2d)

    def subset(self, idx: np.ndarray) -> "RenderSet":
        return RenderSet(**{f.name: (getattr(self, f.name) if f.name == "action_names" else getattr(self, f.name)[idx])
                            for f in fields(self)})

    def to_image_px(self, crop_px: np.ndarray) -> np.ndarray:
        """(N, 17, 2) crop px -> image px through each sample's box."""
        k = self.box[:, 2:3, None] / 256.0
        centre = self.box[:, None, :2]
        return (crop_px - 127.5) * k + centre


def concat(sets: list[RenderSet]) -> RenderSet:
    names = sets[0].action_names
    for s in sets[1:]:
        if s.action_names and names and s.action_names != names:
            raise UserError("render sets disagree on action names")
        names = names or s.action_names
    return RenderSet(**{f.name: (names if f.name == "action_names" else np.concatenate([getattr(s, f.name) for s in sets]))
                        for f in fields(RenderSet)})


def _manifest_key(root: Path) -> str:
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()[:16]


def _build_cache(root: Path, h36m_npz: str | Path | None, log=print) -> dict[str, np.ndarray]:
    from engines.generator import pool_images_uint8
    from train.synth.dataset import SynthDataset
    from train.synth.samples import SOURCE_H36M

    ds = SynthDataset(root)
    src = ds.manifest.get("source", {})
    if src.get("kind") == "h36m" and h36m_npz is None:
        h36m_npz = src.get("data")
    parts: dict[str, list[np.ndarray]] = {}
    for k, p in enumerate(ds.files):
        sh = ds.shard(k)
        parts.setdefault("images", []).append(pool_images_uint8(sh["images"]))
        for key in ("joints_2d_crop", "mp_joints_2d_crop", "mp_found", "joints_3d", "root_cam", "fbi", "box",
                    "f", "c", "source", "subject", "camera_index", "frame"):
            parts.setdefault(key, []).append(sh[key])
        if k % 10 == 0:
            log(f"  cache {root.name}: shard {k + 1}/{len(ds.files)}")
    d = {k: np.concatenate(v) for k, v in parts.items()}
    n = len(d["images"])
    sh2d = np.full((n, 17, 2), np.nan, np.float32)
    action = np.full(n, -1, np.int32)
    names: list[str] = []
    is_h36m = d["source"] == SOURCE_H36M
    if is_h36m.any():
        if h36m_npz is None or not Path(h36m_npz).is_file():
            raise UserError(f"{root} holds Human3.6M renders: give the npz they came from (h36m_npz)")
        from train.h36m import open_npz, sh_to_17

        z = open_npz(h36m_npz)
        names = [str(a) for a in z["action_names"]]
        rows, cams = d["frame"][is_h36m], d["camera_index"][is_h36m]
        if rows.max() >= len(z["action"]):
            raise UserError(f"{root}: frame indices do not fit {h36m_npz}: wrong npz for this render set")
        action[is_h36m] = z["action"][rows]
        det = sh_to_17(z["detections_2d_sh"][rows, cams])                      # (M, 17, 2) image px
        boxes = d["box"][is_h36m]
        for i, (b, uv) in enumerate(zip(boxes, det)):
            sh2d[np.flatnonzero(is_h36m)[i]] = CropBox(float(b[0]), float(b[1]), float(b[2])).image_to_crop(uv)
    return {"images": d["images"], "gt2d": d["joints_2d_crop"].astype(np.float32),
            "mp2d": np.where(d["mp_found"][:, None, None], d["mp_joints_2d_crop"], np.nan).astype(np.float32),
            "sh2d": sh2d, "joints_3d": d["joints_3d"].astype(np.float32), "root_cam": d["root_cam"].astype(np.float32),
            "fbi": d["fbi"].astype(np.int8), "box": d["box"].astype(np.float32), "f": d["f"].astype(np.float32),
            "c": d["c"].astype(np.float32), "mp_found": d["mp_found"].astype(bool),
            "source": d["source"].astype(np.int32), "subject": d["subject"].astype(np.int32), "action": action,
            "action_names": np.array(names)}


def load_render_set(root: str | Path, h36m_npz: str | Path | None = None, log=print) -> RenderSet:
    """A render folder (train.synth shards + manifest) -> RenderSet, via the cache."""
    root = Path(root)
    if not (root / "manifest.json").is_file():
        raise UserError(f"{root} is not a render set (no manifest.json); make one with `posestream render`")
    cache = root / CACHE_NAME
    key = _manifest_key(root)
    d = None
    if cache.is_file():
        z = np.load(cache)
        if str(z["manifest_key"]) == key:
            d = {k: z[k] for k in z.files if k != "manifest_key"}
    if d is None:
        log(f"building {cache} (once)")
        d = _build_cache(root, h36m_npz, log)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, manifest_key=np.array(key), **d)
        tmp.replace(cache)
    return RenderSet(**{k: np.asarray(v) for k, v in d.items() if k != "action_names"},
                     action_names=tuple(str(a) for a in d["action_names"]))


def manifest(root: str | Path) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def mirror_matrices(box: np.ndarray, c: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(N, 3, 3) camera-space reflections that match mirroring each crop left-right.

    Mirroring the crop about its vertical centre line is (to first order) reflecting the
    scene about the vertical plane through the camera centre and the ray to the crop centre,
    not about the camera's y-z plane: for a person 10 degrees off-axis the naive x -> -x
    would rotate the 3D label by 20 degrees about y. Normal n = (d_z, 0, -d_x) for that ray."""
    dx = (box[:, 0] - c[:, 0]) / f[:, 0]
    n = np.stack([np.ones_like(dx), np.zeros_like(dx), -dx], -1) / np.sqrt(1 + dx**2)[:, None]
    return (np.eye(3)[None] - 2 * n[:, :, None] * n[:, None, :]).astype(np.float32)


def mirror_samples(crop2d: np.ndarray, joints_3d: np.ndarray, root_cam: np.ndarray, mats: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mirror (B, 17, 2) crop-px joints, (B, 17, 3) root-relative joints and (B, 3) roots with
    (B, 3, 3) `mirror_matrices`; left and right joints swap names. Returns the three mirrored
    and the (B, 14) FBI states of the mirrored pose (engines.skeleton rule)."""
    from engines.crop import CROP_SIZE
    from engines.skeleton import FLIP_PERMUTATION, fbi_states

    perm = list(FLIP_PERMUTATION)
    uv = crop2d[:, perm].copy()
    uv[..., 0] = (CROP_SIZE - 1) - uv[..., 0]
    j3 = np.einsum("bij,bkj->bki", mats, joints_3d[:, perm])
    root = np.einsum("bij,bj->bi", mats, root_cam)
    return uv, j3, root, fbi_states(j3 + root[:, None])
