"""The MakeHuman CC0 base mesh as a skinned body (see ../shared/data/makehuman/README.md).

Model space = MakeHuman's axes converted to millimetres: +x = the body's left, +y up,
+z forward (the face looks along +z); origin near the pelvis. Only the `body` group
(vertices 0..13379, 13378 quads -> 26756 triangles) is used.

Skinning weights are normalised as MakeHuman does (drop < 1e-4, divide by the per-vertex
sum) and then cut to the 4 largest per vertex (renormalised): close to dense skinning at a
third of the cost (the probe's comparison: docs/synthetic.md).

The 17 label joints are points rigidly attached to one bone each (LABELS below); posing
moves them with that bone's transform, so a label is exactly where the skinned body has
that joint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from engines.skeleton import JOINT_NAMES, NUM_JOINTS
from train.h36m import default_data_dir

DM_TO_MM = 100.0
NUM_BODY_VERTS = 13380
TOPK = 4

# Appearance parts (index = part id). A vertex's part is the group of bones holding the
# largest share of its skin weight; "hair" is carved out of "head" geometrically.
PARTS: tuple[str, ...] = ("head", "hair", "neck", "torso", "hips", "upper_arm", "lower_arm", "hand",
                          "thigh", "shin", "foot")
PART_INDEX = {n: i for i, n in enumerate(PARTS)}


def _bone_part(name: str) -> str:
    base = name.split(".")[0]
    if base in ("root",) or base.startswith("pelvis"):
        return "hips"
    if base.startswith(("spine", "breast", "clavicle", "shoulder")):
        return "torso"
    if base.startswith("upperarm"):
        return "upper_arm"
    if base.startswith("lowerarm"):
        return "lower_arm"
    if base.startswith(("wrist", "finger", "metacarpal")):
        return "hand"
    if base.startswith("upperleg"):
        return "thigh"
    if base.startswith("lowerleg"):
        return "shin"
    if base.startswith(("foot", "toe")):
        return "foot"
    if base.startswith("neck"):
        return "neck"
    return "head"  # head, jaw, eyes, tongue and the facial bones


# Label joint -> (bone it is attached to, rest position in decimetres or a joint-name
# expression). "bone:head" means that bone's rest head point.
LABELS: dict[str, tuple[str, object]] = {
    "pelvis": ("root", ("mid", "upperleg01.L:head", "upperleg01.R:head")),  # mid-hips, as in H36M
    "r_hip": ("upperleg01.R", "upperleg01.R:head"),
    "r_knee": ("lowerleg01.R", "lowerleg01.R:head"),
    "r_ankle": ("foot.R", "foot.R:head"),
    "l_hip": ("upperleg01.L", "upperleg01.L:head"),
    "l_knee": ("lowerleg01.L", "lowerleg01.L:head"),
    "l_ankle": ("foot.L", "foot.L:head"),
    "spine": ("spine02", "spine02:head"),     # 231 mm above the pelvis (H36M: ~230)
    "thorax": ("neck01", "neck01:head"),      # base of the neck, between the clavicles
    # H36M's neck/nose joint sits below the nose, in front of the neck: a point in the
    # head bone at chin/upper-lip height, 8 cm forward of the neck axis.
    "neck_nose": ("head", (0.0, 6.95, 0.80)),
    # H36M's head joint: inside the skull, ~6 cm below the crown.
    "head": ("head", (0.0, 7.90, 0.10)),
    "l_shoulder": ("upperarm01.L", "upperarm01.L:head"),
    "l_elbow": ("lowerarm01.L", "lowerarm01.L:head"),
    "l_wrist": ("wrist.L", "wrist.L:head"),
    "r_shoulder": ("upperarm01.R", "upperarm01.R:head"),
    "r_elbow": ("lowerarm01.R", "lowerarm01.R:head"),
    "r_wrist": ("wrist.R", "wrist.R:head"),
}
assert tuple(LABELS) == JOINT_NAMES


@dataclass(frozen=True)
class Body:
    """Rest-pose body, model space, mm.

    verts (V,3) float64; faces (F,3) int32 (counter-clockwise seen from outside);
    bone_names (B,); parents (B,) int32, parents[b] < b (topological order), -1 = root;
    heads, tails (B,3) rest bone ends; skin_idx (V,4) int32 bone ids; skin_w (V,4) float32
    summing to 1; part (V,) int8 into PARTS; label_bone (17,) int32; label_rest (17,3).
    """

    verts: np.ndarray
    faces: np.ndarray
    bone_names: tuple[str, ...]
    parents: np.ndarray
    heads: np.ndarray
    tails: np.ndarray
    skin_idx: np.ndarray
    skin_w: np.ndarray
    part: np.ndarray
    label_bone: np.ndarray
    label_rest: np.ndarray
    segment: np.ndarray

    @property
    def bone_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.bone_names)}


# Surface segments for visibility: part id * 2 + side (1 = the body's left, rest x > 0).
def segment_id(part: str, left: bool) -> int:
    return PART_INDEX[part] * 2 + int(left)


def _segments_of(parts: tuple[str, ...], side: str) -> tuple[int, ...]:
    sides = (True, False) if side == "both" else ((side == "l"),)
    return tuple(segment_id(p, s) for p in parts for s in sides)


# Joint j counts as not self-occluded when the surface drawn at its pixel belongs to one of
# these segments (its own limb/trunk), e.g. an elbow is visible on its upper or lower arm.
def label_segments() -> tuple[tuple[int, ...], ...]:
    trunk = ("torso", "hips", "neck")
    out = []
    for name in JOINT_NAMES:
        side = "l" if name.startswith("l_") else "r" if name.startswith("r_") else "both"
        base = name[2:] if side != "both" else name
        parts = {
            "pelvis": trunk + ("thigh",), "spine": trunk, "thorax": trunk + ("upper_arm",),
            "neck_nose": ("head", "hair", "neck"), "head": ("head", "hair", "neck"),
            "hip": ("hips", "thigh", "torso"), "knee": ("thigh", "shin"), "ankle": ("shin", "foot"),
            "shoulder": ("torso", "upper_arm", "neck"), "elbow": ("upper_arm", "lower_arm"),
            "wrist": ("lower_arm", "hand"),
        }[base]
        segs = _segments_of(parts, side)
        if base in ("hip", "shoulder"):  # the trunk is shared by both sides
            segs = segs + _segments_of(("torso", "hips", "neck"), "both")
        out.append(tuple(sorted(set(segs))))
    return tuple(out)




def makehuman_dir() -> Path:
    return default_data_dir() / "makehuman"


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    group = None
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("g "):
                group = line.split()[1]
            elif line.startswith("f ") and group == "body":
                idx = [int(t.split("/")[0]) - 1 for t in line.split()[1:]]
                for k in range(1, len(idx) - 1):  # fan split keeps the winding
                    faces.append([idx[0], idx[k], idx[k + 1]])
    v = np.asarray(verts, np.float64)[:NUM_BODY_VERTS] * DM_TO_MM
    f = np.asarray(faces, np.int32)
    assert f.max() < NUM_BODY_VERTS, "body faces must only use body vertices"
    return v, f


@lru_cache(maxsize=2)
def load_body(data_dir: str | None = None) -> Body:
    """Parse base.obj, default.mhskel and default_weights.mhw (slow: cached per data dir)."""
    d = Path(data_dir) if data_dir else makehuman_dir()
    all_v: list[list[float]] = []
    with open(d / "base.obj") as fh:
        for line in fh:
            if line.startswith("v "):
                all_v.append([float(x) for x in line.split()[1:4]])
    all_v_mm = np.asarray(all_v) * DM_TO_MM
    verts, faces = _read_obj(d / "base.obj")
    skel = json.loads((d / "default.mhskel").read_text())
    bones = skel["bones"]
    # Topological order: parents first.
    order: list[str] = []
    pending = dict(bones)
    while pending:
        for name in list(pending):
            par = pending[name]["parent"]
            if par is None or par in order:
                order.append(name)
                del pending[name]
    index = {n: i for i, n in enumerate(order)}
    parents = np.array([index[bones[n]["parent"]] if bones[n]["parent"] else -1 for n in order], np.int32)

    def joint(name: str) -> np.ndarray:
        return all_v_mm[skel["joints"][name]].mean(axis=0)

    heads = np.stack([joint(bones[n]["head"]) for n in order])
    tails = np.stack([joint(bones[n]["tail"]) for n in order])

    # Weights: bone -> [[vertex, w], ...]; keep body vertices; MakeHuman normalisation.
    wj = json.loads((d / "default_weights.mhw").read_text())["weights"]
    dense = np.zeros((NUM_BODY_VERTS, len(order)), np.float64)
    for bname, pairs in wj.items():
        arr = np.asarray(pairs, np.float64)
        keep = arr[:, 0] < NUM_BODY_VERTS
        dense[arr[keep, 0].astype(np.int64), index[bname]] = arr[keep, 1]
    dense[dense < 1e-4] = 0.0
    empty = dense.sum(1) == 0
    dense[empty, index["root"]] = 1.0
    dense /= dense.sum(1, keepdims=True)
    top = np.argsort(-dense, axis=1)[:, :TOPK]
    tw = np.take_along_axis(dense, top, axis=1)
    tw /= tw.sum(1, keepdims=True)

    part_names = [_bone_part(n) for n in order]
    groups = sorted(set(part_names))
    gsum = np.zeros((NUM_BODY_VERTS, len(PARTS)))
    for p in groups:
        cols = [i for i, pn in enumerate(part_names) if pn == p]
        gsum[:, PART_INDEX[p]] = dense[:, cols].sum(1)
    part = gsum.argmax(1).astype(np.int8)
    # Hair: the skull above the forehead, and the back of the head above the nape.
    y, z = verts[:, 1], verts[:, 2]
    hair = (part == PART_INDEX["head"]) & ((y > 765.0) | ((y > 700.0) & (z < 20.0)))
    part[hair] = PART_INDEX["hair"]

    label_bone = np.zeros(NUM_JOINTS, np.int32)
    label_rest = np.zeros((NUM_JOINTS, 3))

    def point(spec: object) -> np.ndarray:
        if isinstance(spec, str):
            b, end = spec.split(":")
            return heads[index[b]] if end == "head" else tails[index[b]]
        if isinstance(spec, tuple) and spec and spec[0] == "mid":
            return 0.5 * (point(spec[1]) + point(spec[2]))
        return np.asarray(spec, np.float64) * DM_TO_MM

    for j, (name, (bone, spec)) in enumerate(LABELS.items()):
        label_bone[j] = index[bone]
        label_rest[j] = point(spec)
    return Body(verts=verts, faces=faces, bone_names=tuple(order), parents=parents, heads=heads,
                tails=tails, skin_idx=top.astype(np.int32), skin_w=tw.astype(np.float32), part=part,
                label_bone=label_bone, label_rest=label_rest,
                segment=(part.astype(np.int16) * 2 + (verts[:, 0] > 0)).astype(np.int16))
