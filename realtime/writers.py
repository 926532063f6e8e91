"""Streaming pose writers, chosen by the output file's extension (`open_writer`):

.npz  arrays (T = frames, in order, none dropped):
        joints_mm (T,17,3) float32   camera space mm (x right, y down, z forward), root-relative
        translation_mm (T,3) float32 camera-space pelvis position, mm (NaN if unknown)
        joints_2d_px (T,17,2) float32 image pixels; confidence (T,17) float32 in [0,1]
        fbi (T,14,3) float32 FBI probabilities (NaN if the model has no FBI head)
        valid (T,) bool; index (T,) int64; timestamps_s (T,) float64
        fps () float64; image_size (T,2) int32 (width, height)
        joint_names (17,) str; parents (17,) int64; units str; format str
      Crash safety: every frame is appended (and flushed) to OUT.part as one fixed-size
      float64 record; close() turns it into the .npz (written to a temp name, then renamed)
      and deletes the part file. After a crash, `recover_npz(OUT)` finalises the part file.
.json {"meta": {...}, "frames": [{...}, ...]}, one frame object per line, NaN as null,
      flushed per frame (a crash leaves every written frame on disk, only the closing "]}"
      missing).
.csv  one row per frame: index, timestamp_s, valid, image_w, image_h, tx/ty/tz_mm, then for
      each joint x/y/z_mm, u/v_px, conf. NaN as an empty field. Flushed per frame.
.bvh  17-joint hierarchy (engines.skeleton), metres (Blender imports it life-size with the
      default scale), Y up: BVH (X, Y, Z) = camera (x, -y, -z), a rotation about x, so the
      handedness is kept. Offsets use the clip's median bone lengths, so the motion is
      buffered in OUT.part and the file is written at close(). Rotations (channels
      Zrotation Xrotation Yrotation, degrees) are computed from the joint positions: a joint
      with one child turns its parent's frame by the smallest rotation that aligns the bone
      (so twist is inherited smoothly); pelvis and thorax, with three children each, take
      the frame of their left-right axis and upward child, and their children's offsets are
      the clip's median shape in that frame. Limb directions are exact; bone lengths and
      girdle shapes are the clip's medians. BVH has no "missing" frame: frames
      without a person repeat the previous pose (the rest pose before the first person).

Frames without a person are written as NaN with valid=False, never dropped.
`read_pose_npz(path) -> list[PoseFrame]` reads an .npz back.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from engines.errors import UserError
from engines.skeleton import JOINT_NAMES, NUM_FBI_BONES, NUM_JOINTS, PARENTS
from realtime.frames import PoseFrame

NPZ_FORMAT = "posestream-poses-v1"
NPZ_UNITS = ("joints_mm: camera-space millimetres (x right, y down, z forward), root-relative; "
             "translation_mm: camera-space pelvis mm; joints_2d_px: image pixels; timestamps_s: seconds")


class PoseWriter(Protocol):
    path: Path

    def write(self, pose: PoseFrame) -> None: ...

    def close(self) -> None: ...


def _f(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 3)


# --------------------------------------------------------------------------- npz
# One record: index, t, valid, w, h, joints 51, translation 3, uv 34, conf 17, fbi 42.
_REC = 5 + NUM_JOINTS * 3 + 3 + NUM_JOINTS * 2 + NUM_JOINTS + NUM_FBI_BONES * 3


def _record(p: PoseFrame) -> np.ndarray:
    fbi = np.full((NUM_FBI_BONES, 3), np.nan) if p.fbi is None else np.asarray(p.fbi, np.float64)
    rec = np.concatenate([[p.index, p.timestamp_s, float(p.valid), p.image_size[0], p.image_size[1]],
                          np.asarray(p.joints_mm, np.float64).reshape(-1), np.asarray(p.translation_mm, np.float64).reshape(-1),
                          np.asarray(p.joints_2d_px, np.float64).reshape(-1), np.asarray(p.confidence, np.float64).reshape(-1),
                          fbi.reshape(-1)])
    assert rec.shape == (_REC,), rec.shape
    return rec


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _finalize_npz(part: Path, out: Path, fps: float) -> None:
    raw = np.fromfile(part, dtype=np.float64)
    raw = raw[: raw.size // _REC * _REC].reshape(-1, _REC)  # a torn last record is dropped
    o = 5
    J = raw[:, o:o + 51].reshape(-1, NUM_JOINTS, 3); o += 51
    T = raw[:, o:o + 3]; o += 3
    UV = raw[:, o:o + 34].reshape(-1, NUM_JOINTS, 2); o += 34
    C = raw[:, o:o + 17]; o += 17
    F = raw[:, o:o + 42].reshape(-1, NUM_FBI_BONES, 3)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, joints_mm=J.astype(np.float32), translation_mm=T.astype(np.float32),
             joints_2d_px=UV.astype(np.float32), confidence=C.astype(np.float32), fbi=F.astype(np.float32),
             valid=raw[:, 2] > 0.5, index=raw[:, 0].astype(np.int64), timestamps_s=raw[:, 1],
             fps=np.float64(fps), image_size=raw[:, 3:5].astype(np.int32),
             joint_names=np.array(JOINT_NAMES), parents=np.array(PARENTS, np.int64),
             units=np.array(NPZ_UNITS), format=np.array(NPZ_FORMAT))
    os.replace(tmp, out)
    part.unlink()


class NpzWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, float(fps)
        self._part = _part_path(path)
        self._fh = open(self._part, "wb")
        # The fps is needed to finalise a crashed run: keep it beside the part file.
        self._part.with_suffix(".fps").write_text(repr(self.fps))

    def write(self, pose: PoseFrame) -> None:
        self._fh.write(_record(pose).tobytes())
        self._fh.flush()

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        _finalize_npz(self._part, self.path, self.fps)
        self._part.with_suffix(".fps").unlink(missing_ok=True)


def recover_npz(path: str | Path) -> Path:
    """Finalise OUT.npz from OUT.npz.part left by a crashed run; returns OUT."""
    path = Path(path)
    part = _part_path(path)
    if not part.is_file():
        raise UserError(f"no partial file {part} to recover")
    fps_file = part.with_suffix(".fps")
    fps = float(fps_file.read_text()) if fps_file.is_file() else float("nan")
    _finalize_npz(part, path, fps)
    fps_file.unlink(missing_ok=True)
    return path


# What read_pose_npz needs, per frame: name -> (shape after the frame axis, accepted dtype kinds).
# `valid` comes first: its length is the number of frames T.
_NPZ_FIELDS = {"valid": ((), "b"), "joints_mm": ((NUM_JOINTS, 3), "fiu"), "translation_mm": ((3,), "fiu"),
               "joints_2d_px": ((NUM_JOINTS, 2), "fiu"), "confidence": ((NUM_JOINTS,), "fiu"),
               "fbi": ((NUM_FBI_BONES, 3), "fiu"), "index": ((), "iu"), "timestamps_s": ((), "fiu"),
               "image_size": ((2,), "iu")}
# What a damaged archive raises while it is opened or one of its members is read.
NPZ_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def read_pose_npz(path: str | Path) -> list[PoseFrame]:
    """Read a file written by NpzWriter back into PoseFrames (in file order). Anything else (not
    a zip archive, truncated, another format, a missing array, an array of the wrong shape or
    type, e.g. 5 joints instead of 17) is a UserError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pose file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a posestream pose file: not an .npz archive (empty, truncated or another format)")
    try:
        with np.load(path, allow_pickle=False) as d:
            if "format" not in d.files or str(d["format"]) != NPZ_FORMAT:
                raise UserError(f"{path} is not a posestream pose file (format {NPZ_FORMAT!r} expected)")
            missing = [k for k in _NPZ_FIELDS if k not in d.files]
            if missing:
                raise UserError(f"{path} is not a complete posestream pose file: no {', '.join(missing)}")
            a = {k: d[k] for k in _NPZ_FIELDS}
    except NPZ_READ_ERRORS as exc:
        raise UserError(f"cannot read pose file {path}: {exc}") from None
    n = a["valid"].shape[0] if a["valid"].ndim == 1 else -1
    for name, (shape, kinds) in _NPZ_FIELDS.items():
        if a[name].shape != (n, *shape) or a[name].dtype.kind not in kinds:
            want = "(T, " + ", ".join(map(str, shape)) + ")" if shape else "(T,)"
            kind = "bool" if kinds == "b" else "integers" if kinds == "iu" else "numbers"
            raise UserError(f"{path}: {name} has shape {a[name].shape} ({a[name].dtype}), expected {want} of {kind}"
                            + (f" with T = {n} (the length of valid)" if name != "valid" else ""))
    J, T, UV, C, F = (a[k] for k in ("joints_mm", "translation_mm", "joints_2d_px", "confidence", "fbi"))
    valid, idx, ts, size = a["valid"], a["index"], a["timestamps_s"], a["image_size"]
    out = []
    for i in range(n):
        fbi = None if np.isnan(F[i]).all() else F[i]
        out.append(PoseFrame(int(idx[i]), float(ts[i]), bool(valid[i]), J[i], T[i], UV[i], C[i],
                             (int(size[i, 0]), int(size[i, 1])), fbi))
    return out


# --------------------------------------------------------------------------- json / csv
class JsonWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self._fh = open(path, "w")
        meta = {"format": "posestream-poses-json-v1", "fps": fps, "joint_names": list(JOINT_NAMES),
                "parents": list(PARENTS), "units": NPZ_UNITS}
        self._fh.write('{"meta": ' + json.dumps(meta) + ',\n"frames": [\n')
        self._first = True

    def write(self, p: PoseFrame) -> None:
        obj = {"index": p.index, "timestamp_s": round(p.timestamp_s, 6), "valid": bool(p.valid),
               "image_size": list(p.image_size),
               "joints_mm": [[_f(v) for v in j] for j in np.asarray(p.joints_mm)],
               "translation_mm": [_f(v) for v in np.asarray(p.translation_mm)],
               "joints_2d_px": [[_f(v) for v in j] for j in np.asarray(p.joints_2d_px)],
               "confidence": [_f(v) for v in np.asarray(p.confidence)]}
        if p.fbi is not None:
            obj["fbi"] = [[_f(v) for v in b] for b in np.asarray(p.fbi)]
        self._fh.write(("" if self._first else ",\n") + json.dumps(obj, allow_nan=False))
        self._first = False
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.write("\n]}\n")
            self._fh.close()


def csv_header() -> list[str]:
    cols = ["index", "timestamp_s", "valid", "image_w", "image_h", "tx_mm", "ty_mm", "tz_mm"]
    for n in JOINT_NAMES:
        cols += [f"{n}_x_mm", f"{n}_y_mm", f"{n}_z_mm", f"{n}_u_px", f"{n}_v_px", f"{n}_conf"]
    return cols


class CsvWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self._fh = open(path, "w", newline="")
        self._fh.write(",".join(csv_header()) + "\n")

    def write(self, p: PoseFrame) -> None:
        def s(v: float) -> str:
            return "" if not math.isfinite(v) else f"{v:.3f}"
        vals = [str(p.index), f"{p.timestamp_s:.6f}", str(int(p.valid)), str(p.image_size[0]), str(p.image_size[1])]
        vals += [s(v) for v in np.asarray(p.translation_mm, np.float64)]
        J, UV, C = (np.asarray(a, np.float64) for a in (p.joints_mm, p.joints_2d_px, p.confidence))
        for j in range(NUM_JOINTS):
            vals += [s(v) for v in J[j]] + [s(v) for v in UV[j]] + [s(C[j])]
        self._fh.write(",".join(vals) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


# --------------------------------------------------------------------------- bvh
CAM_TO_BVH = np.diag([1.0, -1.0, -1.0])  # camera (x right, y down, z fwd) -> BVH (x, y up, z back)
# Rest-pose direction of each joint's offset from its parent (BVH frame, person facing +Z,
# i.e. the camera, T-pose): the person's right is -X.
REST_DIRECTION: dict[str, tuple[float, float, float]] = {
    "r_hip": (-1, 0, 0), "r_knee": (0, -1, 0), "r_ankle": (0, -1, 0),
    "l_hip": (1, 0, 0), "l_knee": (0, -1, 0), "l_ankle": (0, -1, 0),
    "spine": (0, 1, 0), "thorax": (0, 1, 0), "neck_nose": (0, 1, 0), "head": (0, 1, 0),
    "l_shoulder": (1, 0, 0), "l_elbow": (1, 0, 0), "l_wrist": (1, 0, 0),
    "r_shoulder": (-1, 0, 0), "r_elbow": (-1, 0, 0), "r_wrist": (-1, 0, 0),
}
CHILDREN: tuple[tuple[int, ...], ...] = tuple(tuple(c for c, p in enumerate(PARENTS) if p == j) for j in range(NUM_JOINTS))
# Median H36M-like bone lengths (mm) used only when a clip has no valid frame at all.
_FALLBACK_LENGTH_MM = 250.0


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector a to unit vector b (3x3)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    s = float(np.linalg.norm(v))
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        # 180 degrees: about any axis perpendicular to a.
        axis = np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = v / s
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def euler_zxy_from_matrix(R: np.ndarray) -> tuple[float, float, float]:
    """R = Rz(z) Rx(x) Ry(y) -> (z, x, y) degrees (BVH channel order Z X Y)."""
    sx = float(np.clip(R[2, 1], -1.0, 1.0))
    x = math.asin(sx)
    if abs(math.cos(x)) > 1e-6:
        y = math.atan2(-R[2, 0], R[2, 2])
        z = math.atan2(-R[0, 1], R[1, 1])
    else:  # gimbal lock: only z +- y is defined
        y = 0.0
        z = math.atan2(R[1, 0], R[0, 0])
    return math.degrees(z), math.degrees(x), math.degrees(y)


def matrix_from_euler_zxy(z: float, x: float, y: float) -> np.ndarray:
    """Degrees -> Rz(z) Rx(x) Ry(y)."""
    z, x, y = (math.radians(v) for v in (z, x, y))
    Rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    return Rz @ Rx @ Ry


# Joints with several children ("girdles"): their frame is built from two directions,
# x = first - second child... (left minus right), y = the third (upward) child, orthogonalised.
GIRDLES: dict[int, tuple[int, int, int]] = {
    JOINT_NAMES.index("pelvis"): (JOINT_NAMES.index("l_hip"), JOINT_NAMES.index("r_hip"), JOINT_NAMES.index("spine")),
    JOINT_NAMES.index("thorax"): (JOINT_NAMES.index("l_shoulder"), JOINT_NAMES.index("r_shoulder"),
                                  JOINT_NAMES.index("neck_nose")),
}


def girdle_frame(pos: np.ndarray, j: int) -> np.ndarray:
    """(3, 3) rotation whose columns are the girdle's x (right -> left side), y (towards the
    third child, orthogonalised) and z = x cross y, from positions pos (..., 17, 3)."""
    left, right, up = GIRDLES[j]
    x = pos[left] - pos[right]
    x = x / max(np.linalg.norm(x), 1e-9)
    y = pos[up] - pos[j]
    y = y - np.dot(y, x) * x
    y = y / max(np.linalg.norm(y), 1e-9)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def bvh_offsets(pos: np.ndarray) -> np.ndarray:
    """Rest offsets (17, 3) from valid BVH-frame positions pos (F, 17, 3): limb bones point
    along REST_DIRECTION with their median length; the children of pelvis and thorax keep
    their median shape in the girdle's own frame (so the girdle is rigid and matches the
    clip's typical shape). Without any frame, a T-pose with 250 mm bones."""
    off = np.zeros((NUM_JOINTS, 3))
    girdle_kids = {c for kids in GIRDLES.values() for c in kids}
    for c, par in enumerate(PARENTS):
        if par < 0:
            continue
        direction = np.asarray(REST_DIRECTION[JOINT_NAMES[c]], np.float64)
        if len(pos) == 0:
            off[c] = direction * _FALLBACK_LENGTH_MM / 1000.0
        elif c in girdle_kids and par in GIRDLES:
            local = [girdle_frame(p, par).T @ (p[c] - p[par]) for p in pos]
            off[c] = np.median(np.stack(local), axis=0)
        else:
            off[c] = direction * float(np.median(np.linalg.norm(pos[:, c] - pos[:, par], axis=-1)))
    return off


def bvh_global_rotations(pos: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Global rotation (17, 3, 3) of each joint for BVH-frame positions pos (17, 3).
    A joint with one child turns its parent's frame by the smallest rotation that aligns the
    bone; pelvis and thorax take their girdle frame; leaves inherit their parent's rotation
    (they carry no bone of their own)."""
    G = np.zeros((NUM_JOINTS, 3, 3))
    for j in range(NUM_JOINTS):  # PARENTS is topologically ordered
        Gp = np.eye(3) if PARENTS[j] < 0 else G[PARENTS[j]]
        kids = CHILDREN[j]
        if j in GIRDLES:
            G[j] = girdle_frame(pos, j)
        elif not kids:
            G[j] = Gp
        else:
            c = kids[0]
            a = Gp @ offsets[c]
            b = pos[c] - pos[j]
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            G[j] = Gp if na < 1e-9 or nb < 1e-9 else _align(a / na, b / nb) @ Gp
    return G


class BvhWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, float(fps)
        self._part = _part_path(path)
        self._fh = open(self._part, "wb")

    def write(self, p: PoseFrame) -> None:
        J = np.asarray(p.joints_mm, np.float64)
        t = np.asarray(p.translation_mm, np.float64)
        ok = bool(p.valid) and np.isfinite(J).all()
        rec = np.full(NUM_JOINTS * 3 + 1, np.nan)
        if ok:
            rec[0] = 1.0
            root = t if np.isfinite(t).all() else np.zeros(3)
            rec[1:] = (J - J[0] + root).reshape(-1)
        else:
            rec[0] = 0.0
        self._fh.write(rec.tobytes())
        self._fh.flush()

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        raw = np.fromfile(self._part, dtype=np.float64)
        raw = raw[: raw.size // (NUM_JOINTS * 3 + 1) * (NUM_JOINTS * 3 + 1)].reshape(-1, NUM_JOINTS * 3 + 1)
        ok = raw[:, 0] > 0.5
        pos_mm = raw[:, 1:].reshape(-1, NUM_JOINTS, 3)
        pos_m = pos_mm @ CAM_TO_BVH.T / 1000.0
        offsets = bvh_offsets(pos_m[ok])
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(bvh_hierarchy(offsets))
            fh.write(f"MOTION\nFrames: {len(raw)}\nFrame Time: {1.0 / self.fps if self.fps > 0 else 1 / 30:.6f}\n")
            last = None
            for i in range(len(raw)):
                if ok[i]:
                    last = _motion_line(pos_m[i], offsets)
                elif last is None:
                    last = " ".join(["0.000000"] * (6 + 3 * (NUM_JOINTS - 1)))
                fh.write(last + "\n")
        os.replace(tmp, self.path)
        self._part.unlink()


def bvh_hierarchy(offsets: np.ndarray) -> str:
    """HIERARCHY section: pelvis ROOT with 6 channels, every other joint 3 rotation channels;
    leaves end with an End Site a quarter of their bone further along the same direction."""
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        ind = "  " * depth
        o = offsets[j]
        kw = "ROOT" if PARENTS[j] < 0 else "JOINT"
        lines.append(f"{ind}{kw} {JOINT_NAMES[j]}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}")
        ch = "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" if PARENTS[j] < 0 else "3 Zrotation Xrotation Yrotation"
        lines.append(f"{ind}  CHANNELS {ch}")
        for c in CHILDREN[j]:
            emit(c, depth + 1)
        if not CHILDREN[j]:
            e = 0.25 * o
            lines.append(f"{ind}  End Site")
            lines.append(f"{ind}  {{")
            lines.append(f"{ind}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}")
            lines.append(f"{ind}  }}")
        lines.append(f"{ind}}}")

    emit(0, 0)
    return "\n".join(lines) + "\n"


def bvh_joint_order() -> list[int]:
    """Joints in the order their channels appear (depth-first, as in the hierarchy)."""
    order: list[int] = []

    def visit(j: int) -> None:
        order.append(j)
        for c in CHILDREN[j]:
            visit(c)

    visit(0)
    return order


def _motion_line(pos: np.ndarray, offsets: np.ndarray) -> str:
    G = bvh_global_rotations(pos, offsets)
    vals = [*pos[0]]
    for j in bvh_joint_order():
        local = G[j] if PARENTS[j] < 0 else G[PARENTS[j]].T @ G[j]
        vals += euler_zxy_from_matrix(local)
    return " ".join(f"{v:.6f}" for v in vals)


# --------------------------------------------------------------------------- factory
WRITERS = {".npz": NpzWriter, ".json": JsonWriter, ".csv": CsvWriter, ".bvh": BvhWriter}


def open_writer(path: str | Path, fps: float) -> PoseWriter:
    """A streaming writer for `path`, chosen by its extension (.npz, .json, .csv, .bvh)."""
    path = Path(path)
    cls = WRITERS.get(path.suffix.lower())
    if cls is None:
        raise UserError(f"unsupported output {path.name!r}: use one of {', '.join(WRITERS)}")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return cls(path, fps)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None
