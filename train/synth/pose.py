"""Pose the MakeHuman skeleton from 17 target joint positions (Human3.6M order).

Each H36M bone drives a *chain* of MakeHuman bones that move rigidly together (e.g. the
thigh drives upperleg01+upperleg02). Chains are solved parent-first: the chain's start is
already placed by its parent, its rotation is the smallest rotation (swing) that turns the
chain's rest direction, as carried by the parent, onto the direction to its target joint,
and its length scale along that direction makes the end land exactly on the target. The
twist of a limb is therefore inherited from its parent (the minimum-twist solution: Human3.6M
joints carry no twist). Pelvis and chest get a full orientation from the hip and shoulder
lines; the neck+head chain is aimed at the head joint with the neck/nose joint fixing its
roll.

Every bone maps rest model-space points x (mm) to the target frame as
    X = Rg_b S_b (x - h_b) + h'_b,   S_b = g (I - d d^T) + l d d^T
where d is the chain's rest direction, l its length scale and g the body's girth factor
(bones outside chains — hands, feet, face — keep S = g I). Children heads follow their
parent: h'_c = Rg_p S_p (h_c - h_p) + h'_p.

Labels: the posed 17 joints of the body (`Posed.joints`). All of them except neck_nose land
exactly (to float precision) on the targets; neck_nose is the body's own point (rigid with
the head), about 1-3 cm from the target's (measured in tests/test_synth.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from engines.skeleton import BONES, JOINT_INDEX as JI, NUM_JOINTS
from train.synth.body import Body

# (chain bones, MakeHuman end point "bone:head", target joint, twist secondary or None)
CHAINS: tuple[tuple[tuple[str, ...], str, str, str | None], ...] = (
    (("pelvis.L",), "upperleg01.L", "l_hip", None),
    (("pelvis.R",), "upperleg01.R", "r_hip", None),
    (("upperleg01.L", "upperleg02.L"), "lowerleg01.L", "l_knee", None),
    (("lowerleg01.L", "lowerleg02.L"), "foot.L", "l_ankle", None),
    (("upperleg01.R", "upperleg02.R"), "lowerleg01.R", "r_knee", None),
    (("lowerleg01.R", "lowerleg02.R"), "foot.R", "r_ankle", None),
    (("spine05", "spine04", "spine03"), "spine02", "spine", None),
    (("spine02", "spine01"), "neck01", "thorax", "shoulders"),
    (("clavicle.L", "shoulder01.L"), "upperarm01.L", "l_shoulder", None),
    (("upperarm01.L", "upperarm02.L"), "lowerarm01.L", "l_elbow", None),
    (("lowerarm01.L", "lowerarm02.L"), "wrist.L", "l_wrist", None),
    (("clavicle.R", "shoulder01.R"), "upperarm01.R", "r_shoulder", None),
    (("upperarm01.R", "upperarm02.R"), "lowerarm01.R", "r_elbow", None),
    (("lowerarm01.R", "lowerarm02.R"), "wrist.R", "r_wrist", None),
    (("neck01", "neck02", "neck03", "head"), "", "head", "neck_nose"),
)


@dataclass(frozen=True)
class Posed:
    """A posed body in the target frame (mm): affine (B,3,4) per bone (rest model space ->
    target frame) and joints (17,3), the label joints of the posed body."""

    affine: np.ndarray
    joints: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
    return v / n if n > 1e-9 else v


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.cross costs ~20 us of argument handling per call; this is the hot path.
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction a to direction b (3x3)."""
    a, b = _unit(a), _unit(b)
    v = _cross(a, b)
    c = float(a @ b)
    if c < -1 + 1e-9:  # opposite: rotate pi about any axis perpendicular to a
        axis = _unit(np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0]))
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Orthonormal frame (columns) with e1 along primary, e2 in the primary/secondary plane."""
    e1 = _unit(primary)
    e2 = _unit(secondary - (secondary @ e1) * e1)
    return np.stack([e1, e2, _cross(e1, e2)], axis=1)


# ---- numba versions of the per-chain math (the Python version cost ~1.5 ms a pose) ----
@njit(cache=True)
def _mm(a, b):
    # 3x3 products by hand: numba's `@` needs scipy's BLAS, which is not installed.
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            out[i, j] = a[i, 0] * b[0, j] + a[i, 1] * b[1, j] + a[i, 2] * b[2, j]
    return out


@njit(cache=True)
def _mv(a, v):
    return np.array([a[0, 0] * v[0] + a[0, 1] * v[1] + a[0, 2] * v[2],
                     a[1, 0] * v[0] + a[1, 1] * v[1] + a[1, 2] * v[2],
                     a[2, 0] * v[0] + a[2, 1] * v[1] + a[2, 2] * v[2]])


@njit(cache=True)
def _nb_unit(v):
    n = np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    return v / n if n > 1e-9 else v.copy()


@njit(cache=True)
def _nb_cross(a, b):
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


@njit(cache=True)
def _nb_swing(a, b):
    a = _nb_unit(a)
    b = _nb_unit(b)
    v = _nb_cross(a, b)
    c = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    if c < -1 + 1e-9:
        ref = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        ax = _nb_unit(_nb_cross(a, ref))
        return 2 * np.outer(ax, ax) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + _mm(vx, vx) / (1 + c)


@njit(cache=True)
def _nb_frame(p, s):
    e1 = _nb_unit(p)
    e2 = _nb_unit(s - (s[0] * e1[0] + s[1] * e1[1] + s[2] * e1[2]) * e1)
    e3 = _nb_cross(e1, e2)
    out = np.empty((3, 3))
    for i in range(3):
        out[i, 0] = e1[i]
        out[i, 1] = e2[i]
        out[i, 2] = e3[i]
    return out


@njit(cache=True)
def _nb_solve_groups(T, girth, heads0, pg, d, tj, sec_kind, sec_j, sec_rest, root_rest_frame, pelvis_rest, jid):
    """Group rotations R (G,3,3), linear parts M (G,3,3) and offsets (G,3); group 0 = root,
    group c+1 = chain c. jid = (l_hip, r_hip, spine, pelvis, l_shoulder, r_shoulder)."""
    C = d.shape[0]
    R = np.zeros((C + 1, 3, 3))
    M = np.zeros((C + 1, 3, 3))
    off = np.zeros((C + 1, 3))
    R[0] = _mm(_nb_frame(T[jid[0]] - T[jid[1]], T[jid[2]] - T[jid[3]]), root_rest_frame.T.copy())
    M[0] = girth * R[0]
    off[0] = T[jid[3]] - _mv(M[0], pelvis_rest)
    eye = np.eye(3)
    for c in range(C):
        g = c + 1
        q = pg[c]
        start = _mv(M[q], heads0[c]) + off[q]
        t = T[tj[c]] - start
        if sec_kind[c] == 0:
            R[g] = _mm(_nb_swing(_mv(R[q], d[c]), t), R[q])
        else:
            if sec_kind[c] == 1:
                ts = T[jid[4]] - T[jid[5]]
            else:
                ts = T[sec_j[c]] - start
            R[g] = _mm(_nb_frame(t, ts), _nb_frame(d[c], sec_rest[c]).T.copy())
        dn = _nb_unit(d[c])
        dd = np.sqrt(d[c, 0] ** 2 + d[c, 1] ** 2 + d[c, 2] ** 2)
        length = np.sqrt(t[0] ** 2 + t[1] ** 2 + t[2] ** 2) / max(dd, 1e-9)
        P = np.outer(dn, dn)
        M[g] = _mm(R[g], girth * (eye - P) + length * P)
        off[g] = start - _mv(M[g], heads0[c])
    return R, M, off


class PoseSolver:
    """Precomputed chain structure of a Body; `solve(targets, girth)` -> Posed.

    Bones fall into 16 groups that share one affine: the root and the 15 chains. Every
    other bone (hands, feet, face, breasts) is rigid with its nearest group ancestor
    (S = g I); its affine differs only by where its subtree attaches, so it is computed
    vectorised from its *anchor* (its topmost non-chain ancestor)."""

    def __init__(self, body: Body):
        self.body = body
        bi = body.bone_index
        B = len(body.bone_names)
        self.root = bi["root"]
        group = np.full(B, -1, np.int32)
        group[self.root] = 0
        self.chains = []
        lr = body.label_rest
        for ci, (bones, end, target, sec) in enumerate(CHAINS):
            ids = [bi[b] for b in bones]
            start = body.heads[ids[0]]
            end_rest = body.heads[bi[end]] if end else lr[JI[target]]
            d = end_rest - start
            if sec == "shoulders":
                sec_rest = lr[JI["l_shoulder"]] - lr[JI["r_shoulder"]]
            elif sec:
                sec_rest = lr[JI[sec]] - start
            else:
                sec_rest = None
            group[ids] = ci + 1
            self.chains.append((ids[0], d, JI[target], sec, sec_rest))
        for first, *_ in self.chains:
            assert group[body.parents[first]] >= 0, body.bone_names[first]
        # Anchor of each non-group bone and the group its anchor hangs from.
        anchor = np.arange(B)
        anchor_group = np.full(B, -1, np.int32)
        for b in range(B):  # parents first
            if group[b] >= 0:
                continue
            p = body.parents[b]
            if group[p] >= 0:
                anchor[b], anchor_group[b] = b, group[p]
            else:
                anchor[b], anchor_group[b] = anchor[p], anchor_group[p]
        self.group = group
        self.free = np.flatnonzero(group < 0)
        self.free_anchor = anchor[self.free]
        self.free_group = anchor_group[self.free]
        self.rest_hips = lr[JI["l_hip"]] - lr[JI["r_hip"]]
        self.rest_up = lr[JI["spine"]] - lr[JI["pelvis"]]
        # Packed arrays for the numba kernel.
        C = len(self.chains)
        self._heads0 = np.array([body.heads[f] for f, *_ in self.chains])
        self._pg = np.array([group[body.parents[f]] for f, *_ in self.chains], np.int64)
        self._d = np.array([c[1] for c in self.chains])
        self._tj = np.array([c[2] for c in self.chains], np.int64)
        self._sec_kind = np.array([0 if c[3] is None else 1 if c[3] == "shoulders" else 2 for c in self.chains],
                                  np.int64)
        self._sec_j = np.array([JI[c[3]] if c[3] not in (None, "shoulders") else 0 for c in self.chains], np.int64)
        self._sec_rest = np.array([c[4] if c[4] is not None else np.zeros(3) for c in self.chains])
        self._root_frame = frame(self.rest_hips, self.rest_up)
        self._jid = np.array([JI[n] for n in ("l_hip", "r_hip", "spine", "pelvis", "l_shoulder", "r_shoulder")],
                             np.int64)
        assert C + 1 == len(set(group[group >= 0])), "every chain is its own group"

    def solve(self, targets: np.ndarray, girth: float = 1.0) -> Posed:
        """targets: (17,3) mm in any right-handed frame (the posed body lives in that frame)."""
        assert targets.shape == (NUM_JOINTS, 3), targets.shape
        body = self.body
        T = np.asarray(targets, np.float64)
        R, M, off = _nb_solve_groups(T, float(girth), self._heads0, self._pg, self._d, self._tj, self._sec_kind,
                                     self._sec_j, self._sec_rest, self._root_frame,
                                     body.label_rest[JI["pelvis"]], self._jid)
        B = len(body.bone_names)
        affine = np.zeros((B, 3, 4))
        grp = np.flatnonzero(self.group >= 0)
        affine[grp, :, :3] = M[self.group[grp]]
        affine[grp, :, 3] = off[self.group[grp]]
        # Free bones: M = g R_group; the anchor's head is placed by the group's affine.
        fg = self.free_group
        Mf = girth * R[fg]
        ha = body.heads[self.free_anchor]
        hpa = np.einsum("nij,nj->ni", M[fg], ha) + off[fg]
        affine[self.free, :, :3] = Mf
        affine[self.free, :, 3] = hpa - np.einsum("nij,nj->ni", Mf, ha)
        lb = body.label_bone
        joints = np.einsum("jik,jk->ji", affine[lb, :, :3], body.label_rest) + affine[lb, :, 3]
        return Posed(affine=affine, joints=joints)


def rest_bone_lengths(body: Body) -> np.ndarray:
    """(16,) lengths of the H36M tree bones on the rest body, mm."""
    lr = body.label_rest
    return np.array([np.linalg.norm(lr[c] - lr[p]) for p, c in BONES])


def with_lengths(joints: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Keep the bone directions of joints (17,3), replace the 16 bone lengths (mm)."""
    out = np.zeros_like(joints, dtype=np.float64)
    out[0] = joints[0]
    for (p, c), L in zip(BONES, lengths):  # BONES is parent-first
        out[c] = out[p] + L * _unit(joints[c] - joints[p])
    return out


def _mirror_canon() -> np.ndarray:
    """For each of the 16 BONES, the index of the bone whose random factor it uses: the
    first of {bone, its left/right mirror} (so both sides share one factor)."""
    from engines.skeleton import FLIP_PERMUTATION as FP
    idx = {b: i for i, b in enumerate(BONES)}
    return np.array([min(i, idx[(FP[p], FP[c])]) for i, (p, c) in enumerate(BONES)])


_CANON = _mirror_canon()


def sample_lengths(body: Body, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Anthropometric variation of the rest body: (16,) bone lengths (mm) and a girth factor.

    Overall stature x U(0.88, 1.14) (MakeHuman's base is 1.666 m tall -> about 1.47-1.90 m),
    then each bone x N(1, 0.05) clipped to +-12%, the same on the left and right so bodies
    stay symmetric; girth (limb/torso thickness) x U(0.88, 1.2) x stature.
    """
    base = rest_bone_lengths(body)
    stature = rng.uniform(0.88, 1.14)
    factors = np.clip(rng.normal(1.0, 0.05, len(BONES)), 0.88, 1.12)[_CANON]
    girth = rng.uniform(0.88, 1.2) * stature
    return base * stature * factors, float(girth)
