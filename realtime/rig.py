"""Humanoid rig for the motion-capture outputs (BVH files, VMC over OSC): our 17 joints, plus
MediaPipe's heel, toe, hand and ear landmarks when they are visible, mapped onto a standard
humanoid with a T-pose rest of fixed bone lengths, and the local rotations that pose it.
Numpy only; realtime.bvh and realtime.osc_sink use it.

Rig frame (every function here): right-handed, metres, Y up, the person facing +Z (towards
the camera) with their left at +X: (x, -y, -z) of our camera axes (`CAM_TO_RIG`). The T-pose
rest faces +Z with the arms along +-X, the legs along -Y, palms down; every bone's rest
rotation is the identity, so a bone's local rotation (parent^T . global) is also its
rotation relative to the T-pose, which is what BVH and VRM/Unity humanoids expect.

Bones (`Bone`): each sits on a point and aims its primary axis at another point (its main
child, or its end site). A bone's global rotation turns its rest aim direction onto the
current one by the smallest rotation from its parent's frame, then turns it about that axis
(twist) so a reference vector lines up:
    Side  a side vector: the lower back for the hips (whose aim is the hip joints' axis),
          the shoulders' axis for the chest, the ears' for the head, the palm's index-pinky
          knuckles for forearm and hand; the spine bones blend the hip and shoulder axes.
    Bend  the bend plane with the next bone (elbow, knee), faded out as the limb straightens
          (a straight limb has no bend plane), so upper-arm and thigh twist follow the hinge.
A bone whose points are unknown in a frame (a landmark not visible) keeps its rest rotation
relative to its parent. Aim directions are exact (FK of the rig reproduces every bone
direction); lengths and the shapes of the girdles (hips, chest, head) are the rest's.
The head aims at the face (neck_nose) and rolls with the ears; its end site is the head top.

The rest (`fit_rest`): limb and spine rest directions are the T-pose axes; the foot's and
the face's are anatomical (their median direction in the parent's frame: a standing foot
and a straight-ahead face are the rest); bone lengths and girdle shapes are medians over the
frames given (a clip for files, a running window for live streams, `RunningRest`); what no
frame shows (no landmarks at all) comes from a default adult skeleton (`default_points`).
`level_rotation` makes the person upright when the camera looks up or down.

Rigs: `HUMANOID_BVH` (Mixamo-style names: Hips, Spine, Spine1, Spine2, Neck, Head,
Left/Right Shoulder, Arm, ForeArm, Hand, UpLeg, Leg, Foot, ToeBase, Heel), `HUMANOID_VMC`
(one chest bone; Unity HumanBodyBones names), `H36M_RIG` (our 17 joints and names; its
pelvis and thorax aim along the hip and shoulder axes, with the lower back and the neck as
their up, so a skeleton of fixed shape comes back exactly, joint for joint).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engines.skeleton import FLIP_PERMUTATION, JOINT_NAMES, NUM_JOINTS

Vec = tuple[float, float, float]
CAM_TO_RIG = np.diag([1.0, -1.0, -1.0])   # camera (x right, y down, z forward) -> rig (Y up, Z to the camera)
RIG_TO_UNITY = np.diag([-1.0, 1.0, 1.0])  # rig -> Unity (left-handed, Y up; a T-posed avatar faces +Z)
X: Vec = (1.0, 0.0, 0.0)
Y: Vec = (0.0, 1.0, 0.0)
Z: Vec = (0.0, 0.0, 1.0)

# MediaPipe Pose landmarks used (index per side; "l" is the person's left, as ours).
MP_NOSE, MP_EAR = 0, {"l": 7, "r": 8}
MP_WRIST, MP_PINKY, MP_INDEX = {"l": 15, "r": 16}, {"l": 17, "r": 18}, {"l": 19, "r": 20}
MP_ANKLE, MP_HEEL, MP_TOE = {"l": 27, "r": 28}, {"l": 29, "r": 30}, {"l": 31, "r": 32}
# MediaPipe's left<->right permutation (for the mirror): face pairs, then body pairs 11..32.
MP_FLIP: tuple[int, ...] = tuple(
    {1: 4, 2: 5, 3: 6, 4: 1, 5: 2, 6: 3, 7: 8, 8: 7, 9: 10, 10: 9}.get(i, i) if i < 11 else (i + 1 if i % 2 else i - 1)
    for i in range(33))
VISIBLE = 0.5  # MediaPipe visibility above which a landmark is used

# Where derived points sit (fractions along the segment).
HEAD_BASE = 0.4    # thorax -> head (top): the skull base
CLAVICLE = 0.2     # thorax -> shoulder: the clavicle's inner end
TOE_BASE = 0.7     # ankle -> toe tip: the ball of the foot
BEND_MIN, BEND_FULL = 0.1, 0.3  # sine of a limb's bend below which its bend plane is ignored / fully used


@dataclass(frozen=True)
class Side:
    """Twist from a side vector (a point name holding a vector): in the T-pose it points along
    `rest`. With `blend`, the vector is (1-t) unit(vector) + t unit(blend)."""

    vector: str
    rest: Vec
    blend: str | None = None
    t: float = 0.0


@dataclass(frozen=True)
class Bend:
    """Twist from the bend with the next bone: the part of (toward - this bone's aim point)
    perpendicular to this bone points along `rest` in the T-pose's bend direction."""

    toward: str
    rest: Vec


@dataclass(frozen=True)
class Bone:
    """One rig bone. `at`: the point it sits on; `aim`: the point its primary axis points to
    (None: no rotation of its own, it follows its parent); `rest`: the aim's T-pose direction
    (None: anatomical, fitted in the parent's frame); `end`: a leaf's end site, a point (fitted)
    or a fixed offset in metres in the bone's rest frame; `unity`: the HumanBodyBones name
    sent over VMC; `contact`: its point and end site can touch the ground."""

    name: str
    parent: str | None
    at: str
    aim: str | None = None
    rest: Vec | None = None
    twist: Side | Bend | None = None
    end: str | Vec | None = None
    unity: str | None = None
    contact: bool = False


@dataclass(frozen=True)
class Rig:
    name: str
    bones: tuple[Bone, ...]
    parents: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = [b.name for b in self.bones]
        parents = tuple(-1 if b.parent is None else names.index(b.parent) for b in self.bones)
        assert parents[0] == -1 and all(p < i for i, p in enumerate(parents)), "bones must be topologically ordered"
        object.__setattr__(self, "parents", parents)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bones]

    def children(self, b: int) -> list[int]:
        return [c for c, p in enumerate(self.parents) if p == b]

    def depth_first(self) -> list[int]:
        """Bones in hierarchy order (BVH channel order)."""
        order: list[int] = []

        def visit(b: int) -> None:
            order.append(b)
            for c in self.children(b):
                visit(c)

        visit(0)
        return order


def _neg(v: Vec) -> Vec:
    return (-v[0], -v[1], -v[2])


def _limbs(chest: str, heels: bool, unity: bool) -> list[Bone]:
    """Arms and legs of the humanoid, both sides, Mixamo-style names (Unity's with `unity`)."""
    bones = []
    for s, side_name in (("l", "Left"), ("r", "Right")):
        out = X if s == "l" else _neg(X)

        def u(n: str) -> str | None:
            return side_name + n if unity else None

        bones += [
            Bone(f"{side_name}Shoulder", chest, f"{s}_clavicle", f"{s}_shoulder", out, unity=u("Shoulder")),
            Bone(f"{side_name}Arm", f"{side_name}Shoulder", f"{s}_shoulder", f"{s}_elbow", out,
                 Bend(f"{s}_wrist", Z), unity=u("UpperArm")),
            Bone(f"{side_name}ForeArm", f"{side_name}Arm", f"{s}_elbow", f"{s}_wrist", out,
                 Side(f"{s}_palm", Z), unity=u("LowerArm")),
            Bone(f"{side_name}Hand", f"{side_name}ForeArm", f"{s}_wrist", f"{s}_hand", out,
                 Side(f"{s}_palm", Z), end=f"{s}_hand", unity=u("Hand")),
            Bone(f"{side_name}UpLeg", "Hips", f"{s}_hip", f"{s}_knee", _neg(Y),
                 Bend(f"{s}_ankle", _neg(Z)), unity=u("UpperLeg")),
            Bone(f"{side_name}Leg", f"{side_name}UpLeg", f"{s}_knee", f"{s}_ankle", _neg(Y),
                 unity=u("LowerLeg")),
            Bone(f"{side_name}Foot", f"{side_name}Leg", f"{s}_ankle", f"{s}_toe_base", None,
                 Side(f"{s}_shin_up", Y), unity=u("Foot"), contact=True),
            Bone(f"{side_name}ToeBase", f"{side_name}Foot", f"{s}_toe_base", end=f"{s}_toe",
                 unity=u("Toes"), contact=True),
        ]
        if heels:
            bones.append(Bone(f"{side_name}Heel", f"{side_name}Foot", f"{s}_heel", end=(0.0, 0.0, -0.03), contact=True))
    return bones


def _humanoid(name: str, chest: tuple[str, ...], heels: bool, unity: bool) -> Rig:
    """Hips, Spine, the chest bones `chest`, Neck, Head and the limbs. The spine chain runs
    pelvis -> spine -> evenly between spine and thorax -> thorax (the neck's base); its
    bones' twist blends the hip axis into the shoulder axis along the chain."""
    n = len(chest) + 1
    at = ["spine"] + [f"spine_thorax_{k}_{n}" for k in range(1, n)]
    chain = ["Spine", *chest]
    bones = [Bone("Hips", None, "pelvis", "pelvis_left", X, Side("torso_up", Y), unity="Hips" if unity else None)]
    for k, bname in enumerate(chain):
        bones.append(Bone(bname, "Hips" if k == 0 else chain[k - 1], at[k], at[k + 1] if k + 1 < n else "thorax", Y,
                          Side("hip_side", X, "shoulder_side", (k + 1) / n),
                          unity=bname if unity else None))
    bones += [Bone("Neck", chain[-1], "thorax", "head_base", Y, unity="Neck" if unity else None),
              Bone("Head", "Neck", "head_base", "neck_nose", None, Side("head_side", X), end="head",
                   unity="Head" if unity else None)]
    return Rig(name, tuple(bones + _limbs(chain[-1], heels, unity)))


HUMANOID_BVH = _humanoid("mixamo", ("Spine1", "Spine2"), heels=True, unity=False)
HUMANOID_VMC = _humanoid("vmc", ("Chest",), heels=False, unity=True)


def _h36m_rig() -> Rig:
    bones = [Bone("pelvis", None, "pelvis", "pelvis_left", X, Side("torso_up", Y))]
    for s in ("r", "l"):
        bones += [Bone(f"{s}_hip", "pelvis", f"{s}_hip", f"{s}_knee", _neg(Y), Bend(f"{s}_ankle", _neg(Z))),
                  Bone(f"{s}_knee", f"{s}_hip", f"{s}_knee", f"{s}_ankle", _neg(Y)),
                  Bone(f"{s}_ankle", f"{s}_knee", f"{s}_ankle", f"{s}_toe", None, Side(f"{s}_shin_up", Y),
                       end=f"{s}_toe", contact=True)]
    bones += [Bone("spine", "pelvis", "spine", "thorax", Y, Side("hip_side", X, "shoulder_side", 0.5)),
              Bone("thorax", "spine", "thorax", "thorax_left", X, Side("neck_up", Y)),
              Bone("neck_nose", "thorax", "neck_nose", "head", None, Side("head_side", X)),
              Bone("head", "neck_nose", "head", end=(0.0, 0.05, 0.0))]
    for s in ("l", "r"):
        out = X if s == "l" else _neg(X)
        bones += [Bone(f"{s}_shoulder", "thorax", f"{s}_shoulder", f"{s}_elbow", out, Bend(f"{s}_wrist", Z)),
                  Bone(f"{s}_elbow", f"{s}_shoulder", f"{s}_elbow", f"{s}_wrist", out, Side(f"{s}_palm", Z)),
                  Bone(f"{s}_wrist", f"{s}_elbow", f"{s}_wrist", f"{s}_hand", out, Side(f"{s}_palm", Z),
                       end=f"{s}_hand")]
    return Rig("h36m", tuple(bones))


H36M_RIG = _h36m_rig()
assert sorted(H36M_RIG.names) == sorted(JOINT_NAMES)


# --------------------------------------------------------------------------- points
def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + t * (b - a)


def rig_points(joints_mm: np.ndarray, landmarks_world_mm: np.ndarray | None = None,
               visibility: np.ndarray | None = None, mirror: bool = False) -> dict[str, np.ndarray]:
    """The named points (and side vectors) every rig uses, (F, 3) each, rig frame, metres;
    NaN where unknown (a landmark below VISIBLE, or no landmarks).

    joints_mm: (F, 17, 3) or (17, 3) camera axes, millimetres (camera space or root-relative).
    landmarks_world_mm: (F, 33, 3) MediaPipe world landmarks (camera axes, mm), or None;
    only differences between landmarks are used, attached to our joints (toe = our ankle +
    MediaPipe's ankle->toe), so MediaPipe's origin and scale do not matter.
    visibility: (F, 33) MediaPipe visibility. mirror: left<->right swapped and x negated
    (the person as seen in a mirror)."""
    J = np.asarray(joints_mm, np.float64).reshape(-1, NUM_JOINTS, 3) / 1000.0
    F = len(J)
    if landmarks_world_mm is None:
        L = np.full((F, 33, 3), np.nan)
    else:
        L = np.asarray(landmarks_world_mm, np.float64).reshape(F, 33, 3) / 1000.0
        vis = np.zeros((F, 33)) if visibility is None else np.asarray(visibility, np.float64).reshape(F, 33)
        L = np.where((vis >= VISIBLE)[..., None], L, np.nan)
    if mirror:
        J = J[:, list(FLIP_PERMUTATION)] * [-1.0, 1.0, 1.0]
        L = L[:, list(MP_FLIP)] * [-1.0, 1.0, 1.0]
    J = J @ CAM_TO_RIG.T
    L = L @ CAM_TO_RIG.T
    p = {n: J[:, i] for i, n in enumerate(JOINT_NAMES)}
    for n in (2, 3):
        for k in range(1, n):
            p[f"spine_thorax_{k}_{n}"] = _lerp(p["spine"], p["thorax"], k / n)
    p["head_base"] = _lerp(p["thorax"], p["head"], HEAD_BASE)
    p["hip_side"] = p["l_hip"] - p["r_hip"]
    p["pelvis_left"] = p["pelvis"] + 0.5 * p["hip_side"]
    p["torso_up"] = p["spine"] - p["pelvis"]
    p["shoulder_side"] = p["l_shoulder"] - p["r_shoulder"]
    p["thorax_left"] = p["thorax"] + 0.5 * p["shoulder_side"]
    p["neck_up"] = p["neck_nose"] - p["thorax"]
    for s in ("l", "r"):
        p[f"{s}_clavicle"] = _lerp(p["thorax"], p[f"{s}_shoulder"], CLAVICLE)
        ankle, wrist = p[f"{s}_ankle"], p[f"{s}_wrist"]
        p[f"{s}_toe"] = ankle + (L[:, MP_TOE[s]] - L[:, MP_ANKLE[s]])
        p[f"{s}_toe_base"] = _lerp(ankle, p[f"{s}_toe"], TOE_BASE)
        p[f"{s}_heel"] = ankle + (L[:, MP_HEEL[s]] - L[:, MP_ANKLE[s]])
        p[f"{s}_hand"] = wrist + (0.5 * (L[:, MP_INDEX[s]] + L[:, MP_PINKY[s]]) - L[:, MP_WRIST[s]])
        p[f"{s}_palm"] = L[:, MP_INDEX[s]] - L[:, MP_PINKY[s]]
        p[f"{s}_shin_up"] = p[f"{s}_knee"] - ankle
    # The head's left-right axis: the ears when visible, else from the face's forward offset
    # (neck_nose lies in front of the thorax -> head line): side = up x forward.
    ears = L[:, MP_EAR["l"]] - L[:, MP_EAR["r"]]
    up = p["head"] - p["head_base"]
    fwd = p["neck_nose"] - 0.5 * (p["thorax"] + p["head"])
    upn = up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-9)
    fwd = fwd - np.sum(fwd * upn, -1, keepdims=True) * upn
    face = _cross(upn, fwd)
    face[np.linalg.norm(fwd, axis=-1) < 0.01] = np.nan
    p["head_side"] = np.where(np.isfinite(ears).all(-1, keepdims=True), ears, face)
    return p


def default_points() -> dict[str, np.ndarray]:
    """One frame of a standing adult in the rigs' T-pose (camera 3 m away; every local rotation
    is the identity), with every landmark the rig uses visible: the source of the default rest
    (live streams before their first frames, and whatever a clip never shows)."""
    j = np.zeros((NUM_JOINTS, 3))
    named = {"r_hip": (-120, 0, 0), "l_hip": (120, 0, 0), "r_knee": (-120, 430, 0), "l_knee": (120, 430, 0),
             "r_ankle": (-120, 850, 0), "l_ankle": (120, 850, 0), "spine": (0, -230, 0), "thorax": (0, -480, 0),
             "neck_nose": (0, -620, 0), "head": (0, -720, 0), "l_shoulder": (160, -480, 0),
             "l_elbow": (430, -480, 0), "l_wrist": (680, -480, 0), "r_shoulder": (-160, -480, 0),
             "r_elbow": (-430, -480, 0), "r_wrist": (-680, -480, 0)}
    for n, v in named.items():
        j[JOINT_NAMES.index(n)] = v
    lm = np.zeros((33, 3))
    for s, sx in (("l", 1.0), ("r", -1.0)):
        ankle, wrist = j[JOINT_NAMES.index(f"{s}_ankle")], j[JOINT_NAMES.index(f"{s}_wrist")]
        lm[MP_ANKLE[s]], lm[MP_HEEL[s]], lm[MP_TOE[s]] = ankle, ankle + (0, 70, 50), ankle + (0, 70, -150)
        lm[MP_WRIST[s]] = wrist
        lm[MP_INDEX[s]], lm[MP_PINKY[s]] = wrist + (sx * 80, 0, -25), wrist + (sx * 80, 0, 25)
        lm[MP_EAR[s]] = (sx * 75, -640, 20)
    j += (0, 0, 3000)
    lm += (0, 0, 3000)
    return rig_points(j, lm, np.ones(33))


# --------------------------------------------------------------------------- rotations
def _finite(v: np.ndarray) -> np.ndarray:
    """v with NaN (unknown) entries as 0."""
    return np.where(np.isfinite(v), v, 0.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.cross for (..., 3) arrays, without its axis bookkeeping (this runs per bone per frame)."""
    a, b = np.broadcast_arrays(a, b)
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _skew(k: np.ndarray) -> np.ndarray:
    K = np.zeros(k.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    return K


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: (..., 3) unit axes, (...) radians -> (..., 3, 3)."""
    K = _skew(axis)
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


def align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vectors a to b, (..., 3) -> (..., 3, 3); for opposite
    vectors, 180 degrees about an axis perpendicular to a."""
    v = _cross(a, b)
    s = np.linalg.norm(v, axis=-1)
    c = np.sum(a * b, -1)
    axis = v / np.maximum(s, 1e-12)[..., None]
    if (s <= 1e-9).any():
        perp = np.where((np.abs(a[..., :1]) < 0.9), _cross(a, [1.0, 0.0, 0.0]), _cross(a, [0.0, 1.0, 0.0]))
        axis = np.where((s > 1e-9)[..., None], axis, _unit(perp))
    return rotation_about(axis, np.arctan2(s, c))


def _orth(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """v without its component along unit a."""
    return v - np.sum(v * a, -1, keepdims=True) * a


@dataclass(frozen=True)
class Rest:
    """A rig's T-pose rest, rig frame, metres. aim: (B, 3) rest aim directions (zero for bones
    without an aim); offset: (B, 3) each bone's point from its parent's (root: zero);
    end: (B, 3) end-site offsets in the bone's frame (NaN where the bone has none)."""

    aim: np.ndarray
    offset: np.ndarray
    end: np.ndarray


def _twist_target(bone: Bone, points: dict[str, np.ndarray], a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The twist reference (F, 3) perpendicular to the current aim a (F, 3), and its weight (F,)."""
    tw = bone.twist
    if isinstance(tw, Side):
        s = _unit(points[tw.vector])
        if tw.blend is not None:
            s = (1.0 - tw.t) * s + tw.t * _unit(points[tw.blend])
        s = _orth(s, a)
        n = np.linalg.norm(s, axis=-1)
        w = (np.isfinite(n) & (n > 1e-3)).astype(np.float64)
    else:
        assert isinstance(tw, Bend) and bone.aim is not None
        s = _orth(_unit(points[tw.toward] - points[bone.aim]), a)
        n = np.linalg.norm(s, axis=-1)
        w = np.clip((_finite(n) - BEND_MIN) / (BEND_FULL - BEND_MIN), 0.0, 1.0)
    return _finite(s), w


def _solve_bone(bone: Bone, Gp: np.ndarray, points: dict[str, np.ndarray], aim_rest: np.ndarray) -> np.ndarray:
    """Global rotations (F, 3, 3) of one bone given its parent's (F, 3, 3) (module docstring)."""
    if bone.aim is None:
        return Gp.copy()
    d = points[bone.aim] - points[bone.at]
    d = _finite(d)
    ok = np.linalg.norm(d, axis=-1) > 1e-9
    a0 = Gp @ aim_rest
    a = np.where(ok[:, None], _unit(d), a0)
    G = align(a0, a) @ Gp
    if bone.twist is None:
        return G
    s, w = _twist_target(bone, points, a)
    w = w * ok
    s_rest = _unit(_orth(np.asarray(bone.twist.rest, np.float64), aim_rest))
    s0 = G @ s_rest
    theta = np.arctan2(np.sum(_cross(s0, s) * a, -1), np.sum(s0 * s, -1))
    return rotation_about(a, w * theta) @ G


def fit_rest(rig: Rig, points: dict[str, np.ndarray], default: Rest | None) -> Rest:
    """The rest of `rig` from the frames in `points` (every frame must hold a person): median
    bone lengths, median girdle shapes in the girdle's frame, anatomical aim directions as
    medians in the parent's frame. Anything no frame shows comes from `default` (usually
    `default_rest(rig)`; None: ValueError if something is missing)."""
    B = len(rig.bones)
    F = len(points["pelvis"])
    aim, offset, end = np.zeros((B, 3)), np.zeros((B, 3)), np.full((B, 3), np.nan)
    G = np.zeros((F, B, 3, 3))
    for b, bone in enumerate(rig.bones):
        p = rig.parents[b]
        Gp = np.broadcast_to(np.eye(3), (F, 3, 3)) if p < 0 else G[:, p]
        if bone.aim is not None:
            if bone.rest is not None:
                aim[b] = _unit(np.asarray(bone.rest, np.float64))
            else:
                local = np.einsum("fji,fj->fi", Gp, points[bone.aim] - points[bone.at])
                aim[b] = _unit(_median_or(_unit(local), default, "aim", b))
        G[:, b] = _solve_bone(bone, Gp, points, aim[b])
        if p >= 0:
            pbone = rig.bones[p]
            vec = points[bone.at] - points[pbone.at]
            if pbone.aim == bone.at:
                offset[b] = aim[p] * _length_or(vec, default, "offset", b)
            else:
                offset[b] = _median_or(np.einsum("fji,fj->fi", Gp, vec), default, "offset", b)
        if isinstance(bone.end, str):
            vec = points[bone.end] - points[bone.at]
            if bone.aim == bone.end:
                end[b] = aim[b] * _length_or(vec, default, "end", b)
            else:
                end[b] = _median_or(np.einsum("fji,fj->fi", G[:, b], vec), default, "end", b)
        elif bone.end is not None:
            end[b] = bone.end
    return Rest(aim, offset, end)


def _median_or(values: np.ndarray, default: Rest | None, field_: str, b: int) -> np.ndarray:
    """Per-component median of the finite rows of values (N, 3), else the default rest's."""
    ok = np.isfinite(values).all(-1)
    if ok.any():
        return np.median(values[ok], axis=0)
    if default is None:
        raise ValueError(f"no frame shows what {field_} of bone {b} needs, and no default rest")
    return getattr(default, field_)[b]


def _length_or(vectors: np.ndarray, default: Rest | None, field_: str, b: int) -> float:
    """Median length of the finite vectors (N, 3), else the default rest's."""
    n = np.linalg.norm(vectors, axis=-1)
    n = n[np.isfinite(n)]
    if len(n):
        return float(np.median(n))
    return float(np.linalg.norm(_median_or(np.zeros((0, 3)), default, field_, b)))


_DEFAULT_RESTS: dict[str, Rest] = {}


def default_rest(rig: Rig) -> Rest:
    """The rest of `default_points()` (cached per rig)."""
    if rig.name not in _DEFAULT_RESTS:
        _DEFAULT_RESTS[rig.name] = fit_rest(rig, default_points(), None)
    return _DEFAULT_RESTS[rig.name]


def solve(rig: Rig, points: dict[str, np.ndarray], rest: Rest) -> np.ndarray:
    """Global rotations (F, B, 3, 3) of every bone, rig frame (rest = identity)."""
    F = len(points["pelvis"])
    G = np.zeros((F, len(rig.bones), 3, 3))
    for b, bone in enumerate(rig.bones):
        p = rig.parents[b]
        Gp = np.broadcast_to(np.eye(3), (F, 3, 3)) if p < 0 else G[:, p]
        G[:, b] = _solve_bone(bone, Gp, points, rest.aim[b])
    return G


def local_rotations(rig: Rig, G: np.ndarray) -> np.ndarray:
    """(F, B, 3, 3) rotation of each bone relative to its parent (the root's is global)."""
    L = G.copy()
    for b, p in enumerate(rig.parents):
        if p >= 0:
            L[:, b] = np.swapaxes(G[:, p], -1, -2) @ G[:, b]
    return L


def forward(rig: Rig, rest: Rest, G: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics: bone positions (F, B, 3) and end sites (F, B, 3) (NaN where a bone
    has none) from global rotations G (F, B, 3, 3) and root positions (F, 3)."""
    F, B = G.shape[:2]
    pos = np.zeros((F, B, 3))
    pos[:, 0] = root
    for b in range(1, B):
        p = rig.parents[b]
        pos[:, b] = pos[:, p] + G[:, p] @ rest.offset[b]
    ends = pos + np.einsum("fbij,bj->fbi", G, np.nan_to_num(rest.end, nan=0.0))
    ends[:, np.isnan(rest.end).any(-1)] = np.nan
    return pos, ends


def ground_height(rig: Rig, pos: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(F,) height (Y) of the lowest contact point (feet, toes, heels and their end sites)."""
    idx = [b for b, bone in enumerate(rig.bones) if bone.contact]
    y = np.concatenate([pos[:, idx, 1], ends[:, idx, 1]], axis=1)
    return np.nanmin(y, axis=1)


# --------------------------------------------------------------------------- world
MAX_LEVEL_DEG = 45.0  # camera tilts beyond this are not corrected (the body is not upright then)


def level_rotation(points: dict[str, np.ndarray]) -> np.ndarray:
    """(3, 3) rotation that makes the person upright: the median direction from the ankles'
    midpoint to the thorax over the frames (a standing person's balance line) turned onto +Y
    by the smallest rotation (the heading is kept). This corrects a camera that looks up or
    down, or is rolled. Frames where that line is more than MAX_LEVEL_DEG from the camera's
    up are ignored; without any, the identity (camera assumed level)."""
    line = _unit(points["thorax"] - 0.5 * (points["l_ankle"] + points["r_ankle"]))
    ok = np.isfinite(line).all(-1) & (line[:, 1] > math.cos(math.radians(MAX_LEVEL_DEG)))
    if not ok.any():
        return np.eye(3)
    up = _unit(np.median(line[ok], axis=0))
    return align(up, np.array(Y))


def rotate_points(points: dict[str, np.ndarray], R: np.ndarray) -> dict[str, np.ndarray]:
    """Every point and side vector turned by R (3, 3) about the origin."""
    return {k: v @ R.T for k, v in points.items()}


class RunningRest:
    """The rest and level of a live stream: fitted on the last `window` frames with a person
    (FIT_FRAMES of them, evenly spread), refitted after 1, 2, 4, ... frames and then every
    `every` frames (bone lengths settle within seconds and then follow slowly). Before the
    first frame: the default rest."""

    FIT_FRAMES = 100  # frames of the window the refit uses (evenly spread)

    def __init__(self, rig: Rig, window: int = 300, every: int = 30) -> None:
        self.rig, self.window, self.every = rig, window, every
        self.rest = default_rest(rig)
        self.level = np.eye(3)
        self._frames: list[dict[str, np.ndarray]] = []
        self._seen = 0

    def update(self, points: dict[str, np.ndarray]) -> None:
        """Add one frame's points (each (1, 3)) of a person; refit when due."""
        self._frames.append(points)
        del self._frames[:-self.window]
        self._seen += 1
        n = self._seen
        if (n & (n - 1) == 0 and n < self.every) or n % self.every == 0:
            frames = self._frames[::max(1, len(self._frames) // self.FIT_FRAMES)]  # medians need no more
            clip = {k: np.concatenate([f[k] for f in frames]) for k in points}
            self.rest = fit_rest(self.rig, clip, default_rest(self.rig))
            self.level = level_rotation(clip)


# --------------------------------------------------------------------------- conversions
def euler_zxy_from_matrix(R: np.ndarray) -> np.ndarray:
    """R = Rz(z) Rx(x) Ry(y) -> (..., 3) degrees (z, x, y), BVH channel order Z X Y.
    At gimbal lock (x = +-90 degrees) only z +- y is defined: y = 0 there."""
    R = np.asarray(R, np.float64)
    sx = np.clip(R[..., 2, 1], -1.0, 1.0)
    x = np.arcsin(sx)
    free = np.abs(np.cos(x)) > 1e-6
    y = np.where(free, np.arctan2(-R[..., 2, 0], R[..., 2, 2]), 0.0)
    z = np.where(free, np.arctan2(-R[..., 0, 1], R[..., 1, 1]), np.arctan2(R[..., 1, 0], R[..., 0, 0]))
    return np.degrees(np.stack([z, x, y], axis=-1))


def matrix_from_euler_zxy(z: float, x: float, y: float) -> np.ndarray:
    """Degrees -> Rz(z) Rx(x) Ry(y) (3, 3)."""
    z, x, y = (math.radians(v) for v in (z, x, y))
    Rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    return Rz @ Rx @ Ry


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 4) unit quaternions (x, y, z, w), w >= 0 (Shepperd's
    method: divide by the largest component, so every component keeps full precision)."""
    R = np.asarray(R, np.float64)
    m = {(i, j): R[..., i, j] for i in range(3) for j in range(3)}
    d = np.stack([1 + m[0, 0] - m[1, 1] - m[2, 2], 1 - m[0, 0] + m[1, 1] - m[2, 2],
                  1 - m[0, 0] - m[1, 1] + m[2, 2], 1 + m[0, 0] + m[1, 1] + m[2, 2]], axis=-1)
    k = np.argmax(d, axis=-1)
    s = 2.0 * np.sqrt(np.maximum(np.take_along_axis(d, k[..., None], -1)[..., 0], 1e-300))
    wx, wy, wz = m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]
    xy, xz, yz = m[0, 1] + m[1, 0], m[0, 2] + m[2, 0], m[1, 2] + m[2, 1]
    cases = np.stack([np.stack([s * s / 4, xy, xz, wx], -1), np.stack([xy, s * s / 4, yz, wy], -1),
                      np.stack([xz, yz, s * s / 4, wz], -1), np.stack([wx, wy, wz, s * s / 4], -1)], axis=-2)
    q = np.take_along_axis(cases, k[..., None, None], -2)[..., 0, :] / s[..., None]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:] < 0, -q, q)


def unity_quaternion(R: np.ndarray) -> np.ndarray:
    """A rig-frame rotation (..., 3, 3) as Unity's quaternion (x, y, z, w): the same motion
    seen through RIG_TO_UNITY (a reflection, so the axis's y and z flip sign)."""
    return quaternion_from_matrix(RIG_TO_UNITY @ R @ RIG_TO_UNITY)
