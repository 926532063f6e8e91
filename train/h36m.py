"""Human3.6M loader for the staged npz schema (see ../shared/data/h36m/README.md).

For every row and camera it yields root-relative 3D joints in camera coordinates (mm) and
the 2D input, either "gt" (the 3D joints projected with the camera's full distortion model)
or "sh" (the MPII-trained stacked-hourglass detections mapped to our 17 joints).

The SH detector has no neck/nose joint (our joint 9). We fill it with the linear blend of
the SH upper-neck (our thorax, 8) and head-top (our head, 10) that best fits projected
ground truth on the training subjects: NECK_NOSE_FROM_SH = (w_thorax, w_head), fitted by
`fit_neck_nose_weights` and frozen here so that every model sees the same fill.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.camera import Camera, project_camera, world_to_camera
from engines.errors import UserError
from engines.skeleton import NUM_JOINTS, root_relative

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SH_TO_17 = np.array([3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13])
# Fitted on S1,S5,S6,S7,S8 (gt 2D) by fit_neck_nose_weights(); see module docstring.
NECK_NOSE_FROM_SH = (0.556, 0.444)
REQUIRED_KEYS = ("positions_3d", "detections_2d_sh", "subject", "action", "seq_start", "seq_names",
                 "action_names", "camera_subjects", "camera_R", "camera_T", "camera_f", "camera_c",
                 "camera_k", "camera_p", "image_size")
INPUT_KINDS = ("gt", "sh")


def default_data_dir() -> Path:
    """../shared/data next to the checkout, if present."""
    return DEFAULT_DATA_DIR


@dataclass(frozen=True)
class H36MSet:
    """Flattened (row, camera) samples. M = rows * cameras.

    joints_cam: (M, 17, 3) float32, camera space, mm, root-relative.
    root_cam:   (M, 3) float32, pelvis position in camera space, mm.
    uv:         (M, 17, 2) float32, 2D input in pixels (gt or sh).
    f, c:       (M, 2) float32 pixels, the camera intrinsics of each sample.
    action:     (M,) int, index into action_names.  seq: (M,) int sequence index.
    camera:     (M,) int camera index 0..3.  subject: (M,) int.
    """

    joints_cam: np.ndarray
    root_cam: np.ndarray
    uv: np.ndarray
    f: np.ndarray
    c: np.ndarray
    action: np.ndarray
    seq: np.ndarray
    camera: np.ndarray
    subject: np.ndarray
    action_names: tuple[str, ...]
    seq_names: tuple[str, ...]
    input_kind: str

    def __len__(self) -> int:
        return len(self.joints_cam)

    def run_keys(self) -> np.ndarray:
        """(M,) int64, one value per contiguous run of samples: one sequence seen by one camera
        (what engines.temporal windows must not cross)."""
        return self.seq.astype(np.int64) * 4 + self.camera

    def subset(self, mask: np.ndarray) -> "H36MSet":
        return H36MSet(self.joints_cam[mask], self.root_cam[mask], self.uv[mask], self.f[mask], self.c[mask],
                       self.action[mask], self.seq[mask], self.camera[mask], self.subject[mask],
                       self.action_names, self.seq_names, self.input_kind)


def check_archive(path: str | Path) -> Path:
    """The path, if it is a file that is an .npz (zip) archive; else a UserError that says so.
    numpy's own error for a text or other non-zip file is a hint about allow_pickle, which
    misleads (the file is not a pickle either): the serve command's check, realtime.writers."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not an .npz archive (empty, truncated or another format); a Human3.6M "
                        f"file in the staged schema is expected")
    return path


def open_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load and validate an npz in the staged schema; raises UserError naming the problem."""
    path = check_archive(path)
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except Exception as exc:  # zip errors, pickles, truncation
        raise UserError(f"cannot read {path} as an npz file: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise UserError(f"{path} is not in the Human3.6M staged schema: missing keys {', '.join(missing)}")
    d = {k: z[k] for k in z.files}
    n = d["positions_3d"].shape[0]
    if d["positions_3d"].shape[1:] != (NUM_JOINTS, 3):
        raise UserError(f"{path}: positions_3d has shape {d['positions_3d'].shape}, expected (N, 17, 3)")
    if d["detections_2d_sh"].shape[0] != n or d["detections_2d_sh"].shape[2:] != (16, 2):
        raise UserError(f"{path}: detections_2d_sh has shape {d['detections_2d_sh'].shape}, expected (N, 4, 16, 2)")
    for k in ("subject", "action"):
        if d[k].shape != (n,):
            raise UserError(f"{path}: {k} has shape {d[k].shape}, expected ({n},)")
    if not np.isfinite(d["positions_3d"]).all():
        raise UserError(f"{path}: positions_3d contains NaN or infinite values")
    return d


def camera_of(d: dict[str, np.ndarray], subject: int, cam: int) -> Camera:
    """The Camera of `subject`, camera index `cam` (0..3)."""
    subs = list(d["camera_subjects"])
    if subject not in subs:
        raise UserError(f"no camera parameters for subject {subject}")
    s = subs.index(subject)
    size = tuple(int(v) for v in d["image_size"][cam])
    return Camera(R=d["camera_R"][s, cam].astype(np.float64), T=d["camera_T"][s, cam].astype(np.float64),
                  f=d["camera_f"][s, cam].astype(np.float64), c=d["camera_c"][s, cam].astype(np.float64),
                  k=d["camera_k"][s, cam].astype(np.float64), p=d["camera_p"][s, cam].astype(np.float64),
                  size=size)  # type: ignore[arg-type]


def sh_to_17(det: np.ndarray, weights: tuple[float, float] = NECK_NOSE_FROM_SH) -> np.ndarray:
    """(..., 16, 2) MPII-order SH detections -> (..., 17, 2) in our order; joint 9 filled."""
    out = np.zeros(det.shape[:-2] + (NUM_JOINTS, 2), dtype=np.float32)
    out[..., SH_TO_17, :] = det
    out[..., 9, :] = weights[0] * out[..., 8, :] + weights[1] * out[..., 10, :]
    return out


def row_sequence(d: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) sequence index of each row, from seq_start."""
    n = d["positions_3d"].shape[0]
    seq = np.zeros(n, dtype=np.int32)
    starts = np.asarray(d["seq_start"])
    for i, s in enumerate(starts):
        seq[s:] = i
    return seq


def row_spacing_ms(path: str | Path) -> float:
    """Time between consecutive rows of a sequence, ms: 20 ms (50 Hz) times the file's
    frame_step, or the median step of its 50 Hz `frame` indices within sequences."""
    with np.load(check_archive(path), allow_pickle=False) as z:
        if "frame_step" in z.files:
            return 20.0 * float(z["frame_step"])
        if "frame" in z.files and "seq_start" in z.files:
            steps = np.diff(z["frame"].astype(np.int64))
            inside = np.ones(len(steps), bool)
            inside[np.asarray(z["seq_start"])[1:] - 1] = False
            steps = steps[inside & (steps > 0)]
            if len(steps):
                return 20.0 * float(np.median(steps))
    raise UserError(f"{path}: neither frame_step nor frame indices say how far apart the rows are")


def frame_windows(feats: np.ndarray, keys: np.ndarray, row_ms: float, spec) -> np.ndarray:
    """Windows (M, window, D) of per-frame inputs (M, D) in run order, rows row_ms apart, at
    spec's spacing: by row strides when a whole stride is within 25 % of it (exact rows,
    engines.temporal.windowed_features), else resampled by time within each run
    (engines.temporal.timed_windows), e.g. 10 Hz rows for a 40 ms model."""
    from engines.temporal import group_bounds, row_stride, timed_windows, windowed_features

    try:
        return windowed_features(feats, keys, row_stride(row_ms, spec.spacing_ms), spec.window, spec.causal)
    except UserError:
        if row_ms > 2.5 * spec.spacing_ms:   # interpolating across more than 2 model steps blurs the motion
            raise
    first, last = group_bounds(keys)
    out = np.empty((len(feats), spec.window, feats.shape[1]), np.float32)
    for a in np.unique(first):
        b = int(last[a]) + 1
        t = np.arange(b - a) * float(row_ms)
        out[a:b] = timed_windows(t, feats[a:b], t, spec)
    return out


def windowed(s: H36MSet, path: str | Path, window: int, causal: bool, spacing_ms: float,
             every: int = 1) -> tuple[np.ndarray, H36MSet]:
    """Temporal-lifter input for every `every`-th sample of s, which holds all rows of `path`:
    windows of features_2d at spacing_ms (frame_windows: row strides, or resampled by time
    when no whole stride fits). Returns ((M', window, 37) float32, the M' samples)."""
    from engines.normalize import features_2d
    from engines.temporal import WindowSpec

    win = frame_windows(features_2d(s.uv, s.f, s.c), s.run_keys(), row_spacing_ms(path),
                        WindowSpec(window, causal, spacing_ms))
    keep = np.arange(0, len(s), every)
    return win[keep], s.subset(keep)


def sequence_input(s: H36MSet, path: str | Path, window: int, causal: bool, spacing_ms: float,
                   chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """A sequence stage's input for all samples of s, which holds all rows of `path`: stretches
    of chunk + window - 1 frames at the row stride closest to spacing_ms, and each sample's row
    among the stretches' outputs (engines.temporal.sequence_chunks, the same edge padding as
    windowed). Returns ((N, chunk + window - 1, 37) float32, slot (M,) int64). UserError when
    no whole row stride fits spacing_ms (evaluate such a model per window: windowed)."""
    from engines.normalize import features_2d
    from engines.temporal import row_stride, sequence_chunks

    stride = row_stride(row_spacing_ms(path), spacing_ms)
    return sequence_chunks(features_2d(s.uv, s.f, s.c), s.run_keys(), stride, window, causal, chunk)


def load(path: str | Path, input_kind: str = "gt", cameras: tuple[int, ...] = (0, 1, 2, 3),
         every: int = 1) -> H36MSet:
    """Load an npz in the staged schema as per-camera samples (see H36MSet).

    every: keep every n-th row (frame subsampling for quick training/evaluation).
    """
    if input_kind not in INPUT_KINDS:
        raise UserError(f"unknown input kind {input_kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    d = open_npz(path)
    rows = np.arange(0, d["positions_3d"].shape[0], every)
    pos = d["positions_3d"][rows].astype(np.float64)
    subj = d["subject"][rows].astype(np.int32)
    seq = row_sequence(d)[rows]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("j", "r", "uv", "f", "c", "a", "q", "cam", "s")}
    for cam in cameras:
        for s in np.unique(subj):
            m = subj == s
            camobj = camera_of(d, int(s), cam)
            xc = world_to_camera(pos[m], camobj.R, camobj.T)
            if input_kind == "gt":
                uv = project_camera(xc, camobj.f, camobj.c, camobj.k, camobj.p).astype(np.float32)
            else:
                det = d["detections_2d_sh"][rows[m], cam]
                if not np.isfinite(det).all():
                    bad = int((~np.isfinite(det)).any(axis=(1, 2)).sum())
                    raise UserError(f"{path}: {bad} SH detections of subject {s}, camera {cam} are NaN; "
                                    "use --input gt or a file with complete detections")
                uv = sh_to_17(det)
            k = int(m.sum())
            parts["j"].append(root_relative(xc).astype(np.float32))
            parts["r"].append(xc[:, 0].astype(np.float32))
            parts["uv"].append(uv)
            parts["f"].append(np.repeat(camobj.f[None].astype(np.float32), k, 0))
            parts["c"].append(np.repeat(camobj.c[None].astype(np.float32), k, 0))
            parts["a"].append(d["action"][rows[m]].astype(np.int32))
            parts["q"].append(seq[m])
            parts["cam"].append(np.full(k, cam, np.int32))
            parts["s"].append(subj[m])
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return H36MSet(cat["j"], cat["r"], cat["uv"], cat["f"], cat["c"], cat["a"], cat["q"], cat["cam"], cat["s"],
                   tuple(str(a) for a in d["action_names"]), tuple(str(s) for s in d["seq_names"]), input_kind)


def fit_neck_nose_weights(path: str | Path) -> tuple[float, float]:
    """Least-squares (w_thorax, w_head) with neck_nose ~ w_t*thorax + w_h*head on projected gt."""
    s = load(path, "gt", every=10)
    A = np.stack([s.uv[:, 8] - s.uv[:, 10]], axis=-1).reshape(-1, 1)
    b = (s.uv[:, 9] - s.uv[:, 10]).reshape(-1)
    w, *_ = np.linalg.lstsq(A, b, rcond=None)
    return float(w[0]), float(1 - w[0])
