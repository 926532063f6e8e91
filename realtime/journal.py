"""The crash-safe journal of a run, and `Clip`, the whole-run arrays every output is made from.

A run appends each PoseFrame to one journal file (OUT.part, next to its first output) as a
fixed-size binary record, with one write() per frame on an unbuffered file: a frame is in
the operating system's cache as soon as `append` returns, so a killed process (even
SIGKILL) loses nothing it had written; only a power cut can lose the cache. At the end the
outputs are rendered from the journal (realtime/writers.py), and the journal is deleted.

File layout (little-endian):
    line 1   b"posestream-journal-v1\\n"
    line 2   one JSON object + b"\\n": {"fps", "record_dtype" (numpy descr: [name, type,
             shape]), "outputs" ([{"path" (relative to the journal's folder, or absolute),
             "options"}]), "source" (what the run read), "pid", "created"}
    then     records of `record_dtype`, one per frame, in order (RECORD_DTYPE below: every
             PoseFrame field, MediaPipe's 33 landmarks included, and a CRC-32 of the record).
A reader takes the longest run of whole records whose marker and CRC check, so a torn or
garbage tail (a crash mid-write, a disk that filled up) is dropped, never misread. Readers
use the dtype in the header, so a later version may add fields (missing ones read as NaN).

Files written by earlier versions, which kept OUT.npz.part (float64 records of index,
time, valid, size, joints, translation, 2D, confidence, FBI; fps in OUT.npz.fps) and
OUT.bvh.part (float64 records of valid + camera-space joints), are read too.
"""
from __future__ import annotations

import datetime
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from engines.errors import UserError
from engines.landmarks import NUM_MP_LANDMARKS
from engines.skeleton import NUM_FBI_BONES, NUM_JOINTS
from realtime.frames import PoseFrame

MAGIC = b"posestream-journal-v1\n"
RECORD_MARK = 0x50534A31  # "PSJ1": first field of every record
RECORD_DTYPE = np.dtype([
    ("mark", "<u4"), ("index", "<i8"), ("timestamp_s", "<f8"), ("valid", "u1"), ("track_id", "<i4"),
    ("image_size", "<i4", (2,)),
    ("joints_mm", "<f4", (NUM_JOINTS, 3)), ("translation_mm", "<f4", (3,)),
    ("joints_2d_px", "<f4", (NUM_JOINTS, 2)), ("confidence", "<f4", (NUM_JOINTS,)),
    ("fbi", "<f4", (NUM_FBI_BONES, 3)),
    ("landmarks_px", "<f4", (NUM_MP_LANDMARKS, 2)), ("landmarks_world_mm", "<f4", (NUM_MP_LANDMARKS, 3)),
    ("landmarks_visibility", "<f4", (NUM_MP_LANDMARKS,)),
    ("crc", "<u4"),
])
_CRC_SPAN = RECORD_DTYPE.itemsize - 4  # the CRC covers every byte before it

# Earlier versions' part files (float64 records): npz = 5 + 51 + 3 + 34 + 17 + 42 values,
# bvh = valid + 51 camera-space joint coordinates.
_LEGACY_NPZ = 5 + NUM_JOINTS * 3 + 3 + NUM_JOINTS * 2 + NUM_JOINTS + NUM_FBI_BONES * 3
_LEGACY_BVH = 1 + NUM_JOINTS * 3
_LEGACY_DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class Clip:
    """Every frame of a run as arrays (T = records, in order, none dropped). Units as in
    PoseFrame: millimetres in camera axes (x right, y down, z forward), pixels for 2D.
    A record is one person of one frame: one per frame for one person (a frame without a
    person is one record with valid=False); with several people (`--people N`) one per person
    found, consecutive records of a frame sharing its index (`groups`, `people`).

    index (T,) int64; timestamps_s (T,) float64; valid (T,) bool; track_id (T,) int32;
    image_size (T, 2) int32 (width, height); joints_mm (T, 17, 3) float32 root-relative;
    translation_mm (T, 3) float32 camera-space pelvis (NaN if unknown); joints_2d_px (T, 17, 2);
    confidence (T, 17); fbi (T, 14, 3) (NaN where the model has no FBI head);
    landmarks_px (T, 33, 2), landmarks_world_mm (T, 33, 3), landmarks_visibility (T, 33):
    MediaPipe's 33 landmarks, NaN where absent. fps: the source's frame rate (NaN if unknown).
    source: what the run read ({"kind": "video", "file": ...}), for the outputs' metadata."""

    fps: float
    index: np.ndarray
    timestamps_s: np.ndarray
    valid: np.ndarray
    track_id: np.ndarray
    image_size: np.ndarray
    joints_mm: np.ndarray
    translation_mm: np.ndarray
    joints_2d_px: np.ndarray
    confidence: np.ndarray
    fbi: np.ndarray
    landmarks_px: np.ndarray
    landmarks_world_mm: np.ndarray
    landmarks_visibility: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def multi(self) -> bool:
        """Whether the run tracked several people (source "people" > 1), or the records say
        so (a frame with several records): the outputs then have a person axis."""
        return (int(self.source.get("people", 1) or 1) > 1
                or bool(len(self.index) > 1 and (np.diff(self.index) == 0).any()))

    def groups(self) -> list[np.ndarray]:
        """The record rows of each frame (consecutive records with the same index), in order."""
        if len(self.index) == 0:
            return []
        starts = np.flatnonzero(np.concatenate([[True], np.diff(self.index) != 0]))
        return np.split(np.arange(len(self.index)), starts[1:])

    def people(self) -> "People":
        """The clip on a person axis: F frames x P tracks (every track id with a valid record)."""
        groups = self.groups()
        ids = np.unique(self.track_id[self.valid]).astype(np.int32)
        F, P = len(groups), len(ids)
        col = {int(t): k for k, t in enumerate(ids)}
        first = np.array([g[0] for g in groups], np.int64)

        def axis(a: np.ndarray) -> np.ndarray:
            out = np.full((F, P) + a.shape[1:], np.nan if a.dtype.kind == "f" else 0, a.dtype)
            for f, g in enumerate(groups):
                for r in g:
                    if self.valid[r]:
                        out[f, col[int(self.track_id[r])]] = a[r]
            return out

        return People(self.fps, ids, self.index[first], self.timestamps_s[first], self.image_size[first],
                      axis(self.valid), *(axis(a) for a in (self.joints_mm, self.translation_mm, self.joints_2d_px,
                                                            self.confidence, self.fbi, self.landmarks_px,
                                                            self.landmarks_world_mm, self.landmarks_visibility)),
                      source=self.source)

    def track(self, track_id: int) -> "Clip":
        """One person's clip: a record per frame, theirs where they were found, an empty one
        (valid=False) elsewhere."""
        groups = self.groups()
        rows = np.empty(len(groups), np.int64)
        found = np.zeros(len(groups), bool)
        for f, g in enumerate(groups):
            mine = [r for r in g if self.valid[r] and self.track_id[r] == track_id]
            rows[f], found[f] = (mine[0], True) if mine else (g[0], False)

        def take(a: np.ndarray) -> np.ndarray:
            out = a[rows].copy()
            if out.dtype.kind == "f":
                out[~found] = np.nan
            return out

        return Clip(self.fps, self.index[rows], self.timestamps_s[rows], found, np.full(len(rows), track_id, np.int32),
                    self.image_size[rows], *(take(a) for a in (self.joints_mm, self.translation_mm, self.joints_2d_px,
                                                               self.confidence, self.fbi, self.landmarks_px,
                                                               self.landmarks_world_mm, self.landmarks_visibility)),
                    source=self.source)

    @property
    def has_landmarks(self) -> np.ndarray:
        """(T,) bool: frames that carry MediaPipe's landmarks."""
        return np.isfinite(self.landmarks_px).all(axis=(1, 2))

    def frames(self) -> Iterator[PoseFrame]:
        """The clip as PoseFrames again (fbi and landmarks None where absent), one per frame:
        a frame's several people as one PoseFrame with `others`."""
        for g in self.groups():
            if len(g) == 1:
                yield self._record(g[0])
                continue
            people = [self._record(r) for r in g]
            yield PoseFrame.from_people(people, people[0].index, people[0].timestamp_s, people[0].image_size)

    def _record(self, i: int) -> PoseFrame:
        lm = bool(np.isfinite(self.landmarks_px[i]).all())
        fbi = self.fbi[i]
        return PoseFrame(int(self.index[i]), float(self.timestamps_s[i]), bool(self.valid[i]), self.joints_mm[i],
                         self.translation_mm[i], self.joints_2d_px[i], self.confidence[i],
                         (int(self.image_size[i, 0]), int(self.image_size[i, 1])),
                         None if np.isnan(fbi).all() else fbi, {}, int(self.track_id[i]),
                         self.landmarks_px[i] if lm else None, self.landmarks_world_mm[i] if lm else None,
                         self.landmarks_visibility[i] if lm else None)

    @staticmethod
    def from_records(records: np.ndarray, fps: float, source: dict[str, Any] | None = None) -> "Clip":
        """A Clip from journal records (any dtype with a subset of RECORD_DTYPE's fields:
        missing fields read as NaN, or 0 for the track id)."""
        full = np.zeros(len(records), RECORD_DTYPE)
        for name in RECORD_DTYPE.names:
            if name in ("mark", "crc"):
                continue
            if records.dtype.names and name in records.dtype.names:
                full[name] = records[name]
            elif RECORD_DTYPE[name].base.kind == "f":
                full[name] = np.nan
        return Clip(float(fps), full["index"].astype(np.int64), full["timestamp_s"].astype(np.float64),
                    full["valid"] > 0, full["track_id"].astype(np.int32), full["image_size"].astype(np.int32),
                    *(np.ascontiguousarray(full[k], np.float32) for k in (
                        "joints_mm", "translation_mm", "joints_2d_px", "confidence", "fbi", "landmarks_px",
                        "landmarks_world_mm", "landmarks_visibility")),
                    source=dict(source or {}))

    @staticmethod
    def from_frames(frames: Iterable[PoseFrame], fps: float, source: dict[str, Any] | None = None) -> "Clip":
        """A Clip from PoseFrames (what the journal would hold for them)."""
        recs = [encode_frame(p) for p in frames]
        return Clip.from_records(np.frombuffer(b"".join(recs), RECORD_DTYPE), fps, source)


@dataclass(frozen=True)
class People:
    """A clip of several people on a person axis (F frames, P tracks in track id order),
    from `Clip.people()`. track_ids (P,) int32; index (F,) int64; timestamps_s (F,) float64;
    image_size (F, 2) int32; valid (F, P) bool: track p was found in frame f; joints_mm
    (F, P, 17, 3), translation_mm (F, P, 3), joints_2d_px (F, P, 17, 2), confidence (F, P, 17),
    fbi (F, P, 14, 3), landmarks_px (F, P, 33, 2), landmarks_world_mm (F, P, 33, 3),
    landmarks_visibility (F, P, 33): float32, units as in Clip, NaN where not found. All
    translations are in the one camera space, so the people's relative positions are metric."""

    fps: float
    track_ids: np.ndarray
    index: np.ndarray
    timestamps_s: np.ndarray
    image_size: np.ndarray
    valid: np.ndarray
    joints_mm: np.ndarray
    translation_mm: np.ndarray
    joints_2d_px: np.ndarray
    confidence: np.ndarray
    fbi: np.ndarray
    landmarks_px: np.ndarray
    landmarks_world_mm: np.ndarray
    landmarks_visibility: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)


def encode_frame(pose: PoseFrame) -> bytes:
    """The records of one frame: one per person of it (PoseFrame.people), or the frame's own
    record when nobody was found."""
    return b"".join(encode(p) for p in (pose.people or (pose,)))


def encode(p: PoseFrame) -> bytes:
    """One journal record for `p` (RECORD_DTYPE.itemsize bytes, CRC included)."""
    rec = np.zeros((), RECORD_DTYPE)
    rec["mark"] = RECORD_MARK
    rec["index"], rec["timestamp_s"], rec["valid"], rec["track_id"] = p.index, p.timestamp_s, bool(p.valid), p.track_id
    rec["image_size"] = p.image_size
    rec["joints_mm"], rec["translation_mm"] = p.joints_mm, p.translation_mm
    rec["joints_2d_px"], rec["confidence"] = p.joints_2d_px, p.confidence
    rec["fbi"] = np.nan if p.fbi is None else p.fbi
    for name in ("landmarks_px", "landmarks_world_mm", "landmarks_visibility"):
        value = getattr(p, name)
        rec[name] = np.nan if value is None else value
    raw = bytearray(rec.tobytes())
    raw[_CRC_SPAN:] = zlib.crc32(raw[:_CRC_SPAN]).to_bytes(4, "little")
    return bytes(raw)


def _json_default(o: object) -> object:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class JournalWriter:
    """Appends records to a new journal file. `open` creates it exclusively (an existing file
    is an error: it belongs to another run, or is left from one) and locks it (flock), so
    another process can tell a live journal from a leftover (`is_locked`)."""

    def __init__(self, path: Path, fps: float, outputs: list[dict[str, Any]], source: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.frames = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _lock(self._fd)
            header = {"fps": float(fps), "record_dtype": RECORD_DTYPE.descr, "outputs": outputs,
                      "source": dict(source or {}), "pid": os.getpid(),
                      "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            self._write(MAGIC + json.dumps(header, default=_json_default).encode() + b"\n")
        except BaseException:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
            raise

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def append(self, pose: PoseFrame) -> None:
        """One frame: its records (`encode_frame`: one per person) in one write."""
        self._write(encode_frame(pose))
        self.frames += 1

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the file (the data is kept; `delete` removes it)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): live journals are told apart by O_EXCL only
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def is_locked(path: Path) -> bool:
    """True while a running process holds `path` as its journal."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _record_dtype(header: dict[str, Any]) -> np.dtype:
    """The record dtype a journal's header describes (JSON turned numpy's tuples into lists)."""
    return np.dtype([(str(d[0]), str(d[1])) + ((tuple(d[2]),) if len(d) > 2 else ()) for d in header["record_dtype"]])


def journal_frames(path: str | Path) -> int:
    """How many whole records a journal holds now (0 if absent or not one): cheap, it reads
    the header only. For progress and tests; `read_journal` checks the records."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return 0
    end = head.find(b"\n", len(MAGIC))
    if not head.startswith(MAGIC) or end < 0:
        return 0
    try:
        header = json.loads(head[len(MAGIC):end])
        itemsize = _record_dtype(header).itemsize
    except (ValueError, KeyError, TypeError):
        return 0
    return (size - end - 1) // itemsize


@dataclass(frozen=True)
class Journal:
    """A journal read back: its header, the clip of its whole records, and how many trailing
    bytes were dropped (a torn or damaged tail). `outputs` are resolved paths with options."""

    path: Path
    header: dict[str, Any]
    clip: Clip
    dropped_bytes: int
    outputs: list[tuple[Path, dict[str, Any]]]
    legacy: bool = False


def read_journal(path: str | Path) -> Journal:
    """Read a journal (or an earlier version's .npz.part / .bvh.part). UserError if it is
    not one, or cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.startswith(MAGIC):
        return _read_legacy(path, data)
    end = data.find(b"\n", len(MAGIC))
    try:
        if end < 0:
            raise ValueError("the header is incomplete")
        header = json.loads(data[len(MAGIC):end])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        dtype = _record_dtype(header)
        if dtype.itemsize == 0 or not {"mark", "index", "crc"} <= set(dtype.names or ()):
            raise ValueError("its records lack the marker, index or CRC")
        fps = header["fps"]
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps < 0 or fps == float("inf"):
            raise ValueError(f"fps {fps!r} is not a frame rate")
        fps = float(fps)
        if not isinstance(header["outputs"], list) or not header["outputs"]:
            raise ValueError("it lists no outputs")
        outputs = []
        for o in header["outputs"]:
            if not (isinstance(o, dict) and isinstance(o.get("path"), str)
                    and isinstance(o.get("options") or {}, dict)):
                raise ValueError(f"output {o!r} is not a path with options")
            outputs.append((_resolve(path, o["path"]), dict(o.get("options") or {})))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a readable posestream journal: {exc}") from None
    body = data[end + 1:]
    n = len(body) // dtype.itemsize
    recs = np.frombuffer(body[: n * dtype.itemsize], dtype) if n else np.zeros(0, dtype)
    good = _good_prefix(body, recs, dtype)
    clip = Clip.from_records(recs[:good], fps, header.get("source"))
    return Journal(path, header, clip, len(body) - good * dtype.itemsize, outputs)


def _good_prefix(body: bytes, recs: np.ndarray, dtype: np.dtype) -> int:
    """How many leading records have the marker and a matching CRC."""
    names = dtype.names or ()
    size = dtype.itemsize
    for i in range(len(recs)):
        if "mark" in names and int(recs["mark"][i]) != RECORD_MARK:
            return i
        if "crc" in names:
            start = i * size
            if zlib.crc32(body[start:start + size - 4]) != int(recs["crc"][i]):
                return i
    return len(recs)


def _resolve(journal: Path, stored: str) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else journal.parent / p


def relative_to_journal(journal: Path, out: Path) -> str:
    """How a journal names its output: relative to the journal's folder when inside it (so a
    moved folder still recovers), else absolute."""
    try:
        return str(Path(out).resolve().relative_to(Path(journal).resolve().parent))
    except ValueError:
        return str(Path(out).resolve())


def _legacy_plausible(ok: np.ndarray, path: Path) -> int:
    """How many leading legacy records pass the checks in `ok` (T,) bool: the rest is a torn or
    damaged tail, dropped. None passing (with records there) means the file is not a journal,
    so random bytes are never read as frames."""
    good = int(np.argmin(ok)) if not ok.all() else len(ok)
    if len(ok) and good == 0:
        raise UserError(f"{path} is not a posestream journal: its first record holds no plausible frame "
                        f"(a damaged file, or not one a posestream run left)")
    return good


def _finite_or_nan(a: np.ndarray) -> np.ndarray:
    """(T,) bool: every value of a row is NaN or a finite coordinate under 10^7 (10 km in mm)."""
    a = a.reshape(len(a), int(np.prod(a.shape[1:])))
    with np.errstate(invalid="ignore"):
        return (np.isnan(a) | (np.abs(a) < 1e7)).all(axis=1)


def _read_legacy(path: Path, data: bytes) -> Journal:
    if not path.name.endswith(".part"):  # only a journal's name: an output is never read as one
        raise UserError(f"{path} is not a posestream journal (journals are named OUT.part)")
    out = path.with_name(path.name[:-len(".part")])
    suffix = out.suffix.lower()
    raw = np.frombuffer(data[: len(data) // 8 * 8], np.float64)
    if suffix == ".npz":
        fps_file = out.with_name(out.name + ".fps")
        try:
            fps = float(fps_file.read_text()) if fps_file.is_file() else float("nan")
        except (OSError, ValueError):
            fps = float("nan")
        rows = raw[: raw.size // _LEGACY_NPZ * _LEGACY_NPZ].reshape(-1, _LEGACY_NPZ)
        with np.errstate(invalid="ignore"):
            whole = lambda a: np.isfinite(a) & (a >= 0) & (a < 2.0 ** 31) & (a == np.round(a))  # noqa: E731
            ok = (whole(rows[:, 0]) & np.isfinite(rows[:, 1]) & np.isin(rows[:, 2], (0.0, 1.0))
                  & whole(rows[:, 3]) & whole(rows[:, 4]) & _finite_or_nan(rows[:, 5:]))
        rows = rows[:_legacy_plausible(ok, path)]
        recs = np.zeros(len(rows), np.dtype([(n, RECORD_DTYPE[n]) for n in RECORD_DTYPE.names
                                             if not n.startswith("landmarks")]))
        recs["index"], recs["timestamp_s"], recs["valid"] = rows[:, 0], rows[:, 1], rows[:, 2] > 0.5
        recs["image_size"] = rows[:, 3:5]
        o = 5
        for name, width in (("joints_mm", 51), ("translation_mm", 3), ("joints_2d_px", 34), ("confidence", 17),
                            ("fbi", 42)):
            recs[name] = rows[:, o:o + width].reshape((len(rows),) + RECORD_DTYPE[name].shape)
            o += width
        used = rows.size * 8
    elif suffix == ".bvh":
        fps = _LEGACY_DEFAULT_FPS  # that version kept no frame rate beside the .bvh.part
        rows = raw[: raw.size // _LEGACY_BVH * _LEGACY_BVH].reshape(-1, _LEGACY_BVH)
        rows = rows[:_legacy_plausible(np.isin(rows[:, 0], (0.0, 1.0)) & _finite_or_nan(rows[:, 1:]), path)]
        recs = np.zeros(len(rows), np.dtype([(n, RECORD_DTYPE[n]) for n in
                                             ("index", "timestamp_s", "valid", "joints_mm", "translation_mm")]))
        pos = rows[:, 1:].reshape(-1, NUM_JOINTS, 3)
        recs["index"] = np.arange(len(rows))
        recs["timestamp_s"] = np.arange(len(rows)) / fps
        recs["valid"] = rows[:, 0] > 0.5
        recs["joints_mm"] = pos - pos[:, :1]
        recs["translation_mm"] = pos[:, 0]
        used = rows.size * 8
    else:
        raise UserError(f"{path} is not a posestream journal (it does not start with {MAGIC.strip().decode()!r})")
    clip = Clip.from_records(recs, fps, {"recovered_from": path.name})
    header = {"fps": fps, "outputs": [{"path": out.name, "options": {}}], "legacy": True}
    return Journal(path, header, clip, len(data) - used, [(out, {})], legacy=True)
