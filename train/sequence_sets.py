"""Sequence render sets (`posestream render --sequence`, train.synth.sequences) as arrays.

    ss = load_sequence_set("data_out/seq_s9")

Frames of a clip are consecutive and in time order; `clip` (the shard's `index`) names the
clip, so windows and residual statistics never cross clips. Units: image px for 2D, mm for
3D, ms for times.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from engines.errors import UserError


@dataclass(frozen=True)
class SequenceSet:
    """N frames of rendered clips.

    gt2d (N,17,2) exact projection, px; mp2d (N,17,2) MediaPipe's 17 joints, px, NaN where
    not found; found (N,) bool; mp_conf (N,17); landmarks (N,33,3) px + visibility;
    world_mm (N,33,3) MediaPipe world landmarks; joints_3d (N,17,3) root-relative camera mm;
    root_cam (N,3) mm; fbi (N,14) int8; coarse_mm (N,17,3), fbi_prob (N,14,3) the generator's
    cues (NaN when not stored); visibility (N,17) bool; f, c (N,2) px; time_ms (N,) within
    the clip; clip (N,) int; row (N,) H36M row shown exactly (-1 between rows); seq, camera,
    subject, action (N,) int."""

    gt2d: np.ndarray
    mp2d: np.ndarray
    found: np.ndarray
    mp_conf: np.ndarray
    landmarks: np.ndarray
    world_mm: np.ndarray
    joints_3d: np.ndarray
    root_cam: np.ndarray
    fbi: np.ndarray
    coarse_mm: np.ndarray
    fbi_prob: np.ndarray
    visibility: np.ndarray
    f: np.ndarray
    c: np.ndarray
    time_ms: np.ndarray
    clip: np.ndarray
    row: np.ndarray
    seq: np.ndarray
    camera: np.ndarray
    subject: np.ndarray
    action: np.ndarray
    action_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.gt2d)

    def subset(self, mask: np.ndarray) -> "SequenceSet":
        """The frames where mask (N,) bool is set (keep whole clips to keep windows valid)."""
        return SequenceSet(**{f.name: getattr(self, f.name) if f.name == "action_names" else getattr(self, f.name)[mask]
                              for f in fields(self)})

    def clip_keys(self) -> np.ndarray:
        """(N,) int64 run key of each frame (engines.temporal.group_bounds): its clip."""
        return self.clip.astype(np.int64)

    def has_cues(self) -> bool:
        return bool(np.isfinite(self.coarse_mm[self.found]).any())


_KEYS = {"gt2d": "joints_2d_image", "mp2d": "mp_joints_2d", "found": "mp_found", "mp_conf": "mp_conf",
         "landmarks": "mp_landmarks_image", "world_mm": "mp_world_mm", "joints_3d": "joints_3d",
         "root_cam": "root_cam", "fbi": "fbi", "coarse_mm": "coarse_mm", "fbi_prob": "fbi_prob",
         "visibility": "visibility", "f": "f", "c": "c", "time_ms": "time_ms", "clip": "index", "row": "row",
         "seq": "seq", "camera": "camera_index", "subject": "subject", "action": "action"}


def load_sequence_set(root: str | Path) -> SequenceSet:
    """A `posestream render --sequence` folder -> SequenceSet (the finished shards)."""
    from train.synth.dataset import SynthDataset

    root = Path(root)
    ds = SynthDataset(root)
    if "time_ms" not in ds.manifest.get("fields", {}):
        raise UserError(f"{root} is a render set of single images, not of sequences (render it with --sequence)")
    if not len(ds):
        raise UserError(f"{root} has no finished shards yet")
    lab = ds.labels(tuple(_KEYS.values()))
    d = {k: lab[v] for k, v in _KEYS.items()}
    d["mp2d"] = np.where(d["found"][:, None, None], d["mp2d"], np.nan).astype(np.float32)
    names: tuple[str, ...] = ()
    src = ds.manifest.get("source", {})
    if src.get("kind") == "h36m_clips" and Path(src.get("data", "")).is_file():
        with np.load(src["data"]) as z:
            names = tuple(str(a) for a in z["action_names"])
    return SequenceSet(**d, action_names=names)


def concat_sets(sets: list[SequenceSet]) -> SequenceSet:
    """One SequenceSet of several (clip numbers offset so that clips stay distinct)."""
    out, base = [], 0
    for s in sets:
        out.append(SequenceSet(**{**{f.name: getattr(s, f.name) for f in fields(s)}, "clip": s.clip + base}))
        base += int(s.clip.max()) + 1 if len(s) else 0
    names = next((s.action_names for s in sets if s.action_names), ())
    return SequenceSet(**{f.name: names if f.name == "action_names" else
                          np.concatenate([getattr(s, f.name) for s in out]) for f in fields(SequenceSet)})


def is_sequence_set(root: str | Path) -> bool:
    """Whether `root` is a render folder made with --sequence."""
    m = Path(root) / "manifest.json"
    return m.is_file() and "time_ms" in json.loads(m.read_text()).get("fields", {})
