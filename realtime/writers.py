"""Pose outputs: every frame of a run goes to one crash-safe journal, and each output file is
rendered from it at the end, under a temporary name that is renamed on success.

The framework (what a run, or `posestream recover`, does with its outputs):
    specs = output_specs(["a.bvh", "b.npz"], args)   # OutputSpec(path, options) per --out
    check_outputs(specs, overwrite)  -> notes         # before any work: bad suffix, a folder in
                                                      # the way, --no-overwrite, unwritable -> UserError
    rec = Recording(specs, fps, source)               # recovers a leftover OUT.part first (as
                                                      # OUT.recovered.*), then opens the journal
    rec.write(pose)                                   # one flushed record per frame (realtime/journal.py)
    rec.close()                                       # renders every output from the journal:
                                                      # temp name, fsync, rename; deletes the journal
                                                      # when all succeeded (OutputError otherwise)
    recover("a.bvh.part")                             # `posestream recover`: the same rendering
The journal is named after the first output (OUT.part) and lists every output of the run
with its options, so `recover` rebuilds them all. An output that fails to render does not
stop the others, and the journal is kept until every output is written. An existing file
is replaced only by a complete one; a file in place of an output is never half-written.

A format is an `OutputFormat` in FORMATS, chosen by the output's extension:
    render(clip, path, options)  writes the complete output at `path` (a temporary name:
                                 a file, or a folder for folder formats) from a
                                 `realtime.journal.Clip` (all frames as arrays, landmarks
                                 and track ids included); it never sees partial runs
    add_arguments(group)         its command-line options (called once per function by
                                 `add_file_arguments`, for video, webcam and recover)
    options(args) -> dict        the options it needs from those arguments; JSON values,
                                 stored in the journal so `recover` renders the same way

Formats (T = frames, in order, none dropped; frames without a person are NaN with
valid=False):
.npz  arrays: joints_mm (T,17,3) float32 camera space mm (x right, y down, z forward),
      root-relative; translation_mm (T,3) float32 camera-space pelvis mm (NaN if unknown);
      joints_2d_px (T,17,2) float32 image pixels; confidence (T,17) float32 in [0,1];
      fbi (T,14,3) float32 FBI probabilities (NaN if the model has no FBI head);
      valid (T,) bool; index (T,) int64; timestamps_s (T,) float64; fps () float64;
      image_size (T,2) int32 (width, height); track_id (T,) int32;
      joint_names (17,) str; parents (17,) int64; units str; format str
      ("posestream-poses-v1": arrays are only ever added, so readers of v1 files keep working).
      With --landmarks also MediaPipe's 33 landmarks: landmarks_px (T,33,2) float32 pixels,
      landmarks_world_mm (T,33,3) float32 mm (hip-centred, camera axes),
      landmarks_visibility (T,33) float32, landmark_names (33,) str (NaN where absent).
.json {"meta": {...}, "frames": [{...}, ...]}, one frame object per line, NaN as null;
      with --landmarks each frame with landmarks has landmarks_px / landmarks_world_mm /
      landmarks_visibility, and meta has landmark_names.
.csv  one row per frame: index, timestamp_s, valid, image_w, image_h, tx/ty/tz_mm, then for
      each joint x/y/z_mm, u/v_px, conf. NaN as an empty field.
.bvh  motion capture for animation tools (realtime/bvh.py): a humanoid with Mixamo-style
      names (or our 17 joints with --names h36m), a T-pose rest with the clip's median bone
      lengths, centimetres (--units), the feet on the floor (--bvh-root), frame time from
      the timestamps; docs/mocap.md.
.openpose  a folder of OpenPose-style per-frame JSON files (realtime/openpose.py): the
      BODY_25 layout, for tools that read OpenPose output.

`read_pose_npz(path) -> list[PoseFrame]` reads an .npz back.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from engines.errors import UserError
from engines.landmarks import MP_LANDMARK_NAMES, NUM_MP_LANDMARKS
from engines.skeleton import JOINT_NAMES, NUM_FBI_BONES, NUM_JOINTS, PARENTS
from realtime.bvh import add_bvh_arguments, bvh_options, render_bvh
from realtime.frames import PoseFrame
from realtime.journal import Clip, Journal, JournalWriter, is_locked, read_journal, relative_to_journal

NPZ_FORMAT = "posestream-poses-v1"
NPZ_PEOPLE_FORMAT = "posestream-people-v1"
NPZ_UNITS = ("joints_mm: camera-space millimetres (x right, y down, z forward), root-relative; "
             "translation_mm: camera-space pelvis mm; joints_2d_px: image pixels; timestamps_s: seconds")
JSON_FORMAT = "posestream-poses-json-v1"
JSON_PEOPLE_FORMAT = "posestream-people-json-v1"


class PoseWriter(Protocol):
    path: Path

    def write(self, pose: PoseFrame) -> None: ...

    def close(self) -> None: ...


class OutputError(Exception):
    """Some outputs could not be written (the others were, and the journal keeps every frame).
    One line, for the CLI to print; exit code 1."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _f(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 3)


# --------------------------------------------------------------------------- framework
@dataclass(frozen=True)
class OutputFormat:
    """One output format (module docstring): its extension, a one-line summary, the
    renderer, and its command-line options."""

    suffix: str
    summary: str
    render: Callable[[Clip, Path, Mapping[str, Any]], None]
    folder: bool = False
    add_arguments: Callable[[Any], None] | None = None
    options: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    per_person: bool = False  # several people: a file per person beside it (person_path)


@dataclass(frozen=True)
class OutputSpec:
    """One output of a run: where, and the format's options (JSON values)."""

    path: Path
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> OutputFormat:
        return FORMATS[self.path.suffix.lower()]


def part_path(path: Path) -> Path:
    """The journal a run whose first output is `path` keeps: OUT.part."""
    return path.with_name(path.name + ".part")


def temp_path(path: Path) -> Path:
    """Where an output is rendered before the rename: under its own name in a folder
    OUT.tmp beside it (same file system, and the renderer sees the final name)."""
    return path.with_name(path.name + ".tmp") / path.name


def output_spec(path: str | Path, args: argparse.Namespace | None = None) -> OutputSpec:
    """The OutputSpec for `path`, with its format's options taken from `args` (if given)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"unsupported output {path.name!r}: use one of {', '.join(FORMATS)}")
    return OutputSpec(path, dict(fmt.options(args)) if args is not None and fmt.options else {})


def output_specs(paths: Iterable[str | Path] | str | Path | None, args: argparse.Namespace | None = None) -> list[OutputSpec]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [output_spec(p, args) for p in paths]


def _is_our_folder(path: Path) -> bool:
    """A folder output is replaced only if it holds nothing but what that format writes."""
    return all(p.is_file() and p.name.endswith("_keypoints.json") for p in path.iterdir())


def check_outputs(specs: Sequence[OutputSpec], overwrite: bool = True, people: int = 1) -> list[str]:
    """Refuse, before any work, outputs that cannot be written (UserError, one line): the same
    output twice, any problem `check_output_path` finds, and with overwrite=False and several
    people an existing person's file of a per-person format (clip.person0.bvh), which the run
    would otherwise find in its way only at the end. Returns notes to show: existing outputs
    that will be replaced."""
    notes = []
    seen: set[Path] = set()
    for spec in specs:
        key = spec.path.resolve()
        if key in seen:
            raise UserError(f"{spec.path} is given twice as an output")
        seen.add(key)
        note = check_output_path(spec.path, overwrite, spec.format.folder)
        if note:
            notes.append(note)
        if people > 1 and spec.format.per_person and not overwrite:
            found = person_files(spec.path)
            if found:
                raise UserError(f"{found[0]} exists and --no-overwrite is set (a person's file of {spec.path.name}): "
                                f"choose another name or remove it")
    return notes


def _person_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(re.escape(path.stem) + r"\.person\d+" + re.escape(path.suffix))


def person_files(path: Path) -> list[Path]:
    """The existing per-person files of output `path` (person_path: clip.person3.bvh), sorted."""
    pattern = _person_pattern(path)
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:
        return []


def written_files(path: Path, people: int = 1) -> list[Path]:
    """The files output `path` has on disk once written: `path` itself, or with several
    people and a per-person format (.bvh) each person's file (person_path), or `path` when
    nobody was found. Empty if none exists. What messages and resume checks name."""
    fmt = FORMATS.get(path.suffix.lower())
    if people > 1 and fmt is not None and fmt.per_person:
        found = person_files(path)
        if found:
            return found
    return [path] if path.exists() else []


def check_not_input(source: str | Path, outputs: Iterable[str | Path], people: int = 1) -> None:
    """UserError (one line) if an output is the input file or folder itself: the same name,
    another spelling of it or another link to it (the same inode), or with several people a
    person's file of a per-person output (clip.person0.bvh). Writing it would replace what is
    being read."""
    src = Path(source)
    if not src.exists():  # not a path on disk (a camera): nothing to compare
        return
    for out in map(Path, outputs):
        fmt = FORMATS.get(out.suffix.lower())
        candidates = [out]
        if people > 1 and fmt is not None and fmt.per_person:
            candidates += person_files(out)
            if _person_pattern(out).fullmatch(src.name):
                candidates.append(out.with_name(src.name))
        for c in candidates:
            if c.resolve() == src.resolve() or (c.exists() and os.path.samefile(c, src)):
                raise UserError(f"{c} would replace the input {source}: choose another output name")


def check_output_path(p: Path, overwrite: bool, folder: bool = False) -> str | None:
    """UserError if `p` cannot be written as an output: a folder where a file goes (or
    anything but one of our output folders where a folder goes), an existing output with
    overwrite=False, a parent that is a file or not writable. A note if it will be replaced."""
    note = None
    if p.exists() or p.is_symlink():
        if folder and not (p.is_dir() and _is_our_folder(p)):
            raise UserError(f"{p} exists and is not a {p.suffix} output folder: refusing to replace it; "
                            f"choose another name")
        if not folder and p.is_dir():
            raise UserError(f"{p} is a folder: the output must be a file name")
        if not overwrite:
            raise UserError(f"{p} exists and --no-overwrite is set: choose another name or remove it")
        note = f"{p} exists: it will be replaced when this run ends (--no-overwrite keeps it)"
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {p}: {parent} is not writable")
    return note


def _fsync(path: Path) -> None:
    paths = sorted(path.iterdir()) if path.is_dir() else [path]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_output(clip: Clip, spec: OutputSpec, overwrite: bool = True) -> None:
    """Render `clip` to spec.path: into a temporary name, flushed to disk, then renamed over
    the final name (for a folder: the old one is moved aside, the new one renamed in, the old
    one deleted). A failure or an interrupt removes the temporary output and leaves the
    final name as it was."""
    path, tmp = spec.path, temp_path(spec.path)
    clear_temp(tmp.parent, path.name)
    tmp.parent.mkdir()
    try:
        spec.format.render(clip, tmp, spec.options)
        if not tmp.exists():  # one file per person (per_person): each renamed beside `path`
            made = sorted(p for p in tmp.parent.iterdir() if p.name != path.name + ".old")
            for p in made:
                _fsync(p)
            if not overwrite and any(path.with_name(p.name).exists() for p in made):
                raise FileExistsError(f"a person's file of {path} appeared during the run and --no-overwrite is set")
            for p in made:
                os.replace(p, path.with_name(p.name))
            return
        _fsync(tmp)
        if not overwrite and path.exists():
            raise FileExistsError(f"{path} appeared during the run and --no-overwrite is set")
        if spec.format.folder and path.exists():
            os.replace(path, tmp.parent / (path.name + ".old"))  # aside, deleted with the temporary folder
        os.replace(tmp, path)
    finally:
        clear_temp(tmp.parent, path.name)


def clear_temp(folder: Path, name: str) -> None:
    """Remove a temporary folder of ours (holding at most the output `name`), e.g. one a
    killed run left; anything else under that name is the user's and is refused."""
    if not (folder.exists() or folder.is_symlink()):
        return
    stem, suffix = Path(name).stem, Path(name).suffix
    person_file = re.compile(re.escape(stem) + r"\.person\d+" + re.escape(suffix) + "$")
    if folder.is_symlink() or not folder.is_dir() or any(
            p.name not in (name, name + ".old") and not person_file.match(p.name) for p in folder.iterdir()):
        raise FileExistsError(f"{folder} is in the way of the temporary output: move it away")
    shutil.rmtree(folder)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def render_outputs(journal: Journal, specs: Sequence[OutputSpec], overwrite: bool = True) -> None:
    """Write every output from `journal`'s clip, each independently. OutputError naming the
    failed ones (the journal is left for `posestream recover`) if any failed."""
    failed = []
    for spec in specs:
        try:
            write_output(journal.clip, spec, overwrite)
        except Exception as exc:  # noqa: BLE001 - one output's failure must not lose the others
            failed.append(f"{spec.path} ({_why(exc)})")
    if failed:
        raise OutputError(f"could not write {', '.join(failed)}; every frame is kept in {journal.path}: "
                          f"`posestream recover {journal.path}` writes the outputs again")


def _unique_sibling(path: Path, tag: str) -> Path:
    for k in range(1, 1000):
        cand = path.with_name(f"{path.stem}.{tag}{'' if k == 1 else f'-{k}'}{path.suffix}")
        if not (cand.exists() or part_path(cand).exists()):
            return cand
    raise UserError(f"too many {tag} copies of {path} already")


def _delete_journal(journal: Journal) -> None:
    journal.path.unlink(missing_ok=True)
    if journal.legacy:  # an earlier version kept the frame rate beside the .npz.part
        journal.path.with_name(journal.path.name[:-len(".part")] + ".fps").unlink(missing_ok=True)


def _read_leftover(part: Path) -> Journal:
    if is_locked(part):
        raise UserError(f"{part} is being written by a running posestream: wait for it to end, "
                        f"or choose another output name")
    return read_journal(part)


def recover_leftover(part: Path, say: Callable[[str], None] = _say) -> list[Path]:
    """A journal left by an interrupted run, found where this run wants to write: its frames
    are rendered under side names (OUT.recovered.EXT), never overwritten, then it is removed."""
    if not part.is_file():
        return []
    if is_locked(part):
        raise UserError(f"{part} is being written by a running posestream: wait for it to end, "
                        f"or choose another output name")
    try:
        journal = read_journal(part)
    except UserError as exc:
        raise UserError(f"{exc} (found {part.name} left by another run: move it away or delete it)") from None
    if len(journal.clip) == 0:
        _delete_journal(journal)
        say(f"removed {part}: an interrupted run left it without a complete frame")
        return []
    specs = [OutputSpec(_unique_sibling(output_spec(p).path, "recovered"), opts) for p, opts in journal.outputs]
    check_outputs(specs, overwrite=False)
    render_outputs(journal, specs, overwrite=False)
    _delete_journal(journal)
    say(f"{part} was left by an interrupted run: recovered its {len(journal.clip)} frames as "
        f"{', '.join(str(s.path) for s in specs)}")
    return [s.path for s in specs]


def recover(part: str | Path, outputs: Sequence[OutputSpec] | None = None, overwrite: bool = True,
            say: Callable[[str], None] = _say) -> list[Path]:
    """`posestream recover`: render the outputs a journal was meant for (or `outputs`
    instead) from the frames it holds. The journal is removed once the outputs it was meant
    for are written; with other `outputs` it is kept. Returns the paths written."""
    part = Path(part)
    if not part.name.endswith(".part"):  # an output's name: its journal (never the output itself)
        part = part_path(part)
    if not part.is_file():
        raise UserError(f"no journal {part} to recover")
    journal = _read_leftover(part)
    if len(journal.clip) == 0:
        raise UserError(f"{part} holds no complete frame: nothing to recover")
    specs = list(outputs) if outputs else [OutputSpec(output_spec(p).path, opts) for p, opts in journal.outputs]
    for note in check_outputs(specs, overwrite):
        say(note)
    for spec in specs:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
    render_outputs(journal, specs, overwrite)
    if not outputs:
        _delete_journal(journal)
    dropped = f" ({journal.dropped_bytes} bytes of a torn last record dropped)" if journal.dropped_bytes else ""
    say(f"recovered {len(journal.clip)} frames from {part}{dropped}: wrote {', '.join(str(s.path) for s in specs)}")
    return [s.path for s in specs]


class Recording:
    """The file outputs of one run (module docstring). A PoseWriter: `write(pose)` for every
    frame, `close()` at the end (idempotent; renders the outputs, OutputError if some could
    not be written). `close()` with no frame written writes nothing (an existing output stays
    as it was). `path` is the first output, `journal_path` the journal."""

    def __init__(self, outputs: Sequence[OutputSpec | str | Path], fps: float,
                 source: Mapping[str, Any] | None = None, overwrite: bool = True,
                 say: Callable[[str], None] = _say) -> None:
        self.specs = [o if isinstance(o, OutputSpec) else output_spec(o) for o in outputs]
        if not self.specs:
            raise ValueError("a Recording needs at least one output")
        self.overwrite, self._say = overwrite, say
        notes = check_outputs(self.specs, overwrite, int((source or {}).get("people", 1) or 1))
        for spec in self.specs:
            try:
                spec.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot write {spec.path}: {_why(exc)}") from None
        for spec in self.specs:
            recover_leftover(part_path(spec.path), say)
        self.path = self.specs[0].path
        self.journal_path = part_path(self.path)
        stored = [{"path": relative_to_journal(self.journal_path, s.path), "options": dict(s.options)}
                  for s in self.specs]
        try:
            self._journal = JournalWriter(self.journal_path, fps, stored, dict(source or {}))
        except FileExistsError:
            raise UserError(f"{self.journal_path} is being written by another posestream run: "
                            f"choose another output name") from None
        except OSError as exc:
            raise UserError(f"cannot write {self.journal_path}: {_why(exc)}") from None
        for note in notes:
            say(note)

    @property
    def written(self) -> int:
        return self._journal.frames

    @property
    def closed(self) -> bool:
        return self._journal.closed

    def write(self, pose: PoseFrame) -> None:
        self._journal.append(pose)

    def discard(self) -> None:
        """Delete the journal without writing any output (existing outputs stay as they were)."""
        self._journal.delete()

    def close(self) -> None:
        if self._journal.closed:
            return
        self._journal.close()
        if self._journal.frames == 0:
            self._journal.delete()
            return
        journal = read_journal(self.journal_path)
        render_outputs(journal, self.specs, self.overwrite)
        _delete_journal(journal)


def add_file_arguments(parser: argparse.ArgumentParser, out_required: bool = False,
                       out_help: str | None = None) -> None:
    """--out (repeatable), --no-overwrite and every format's options, in one group."""
    g = parser.add_argument_group("file outputs")
    g.add_argument("--out", action="append", required=out_required, metavar="FILE",
                   help=out_help or f"write poses to FILE; repeat for several outputs in one pass "
                                    f"({', '.join(FORMATS)}: the extension picks the format)")
    g.add_argument("--no-overwrite", action="store_true",
                   help="refuse to replace an existing output (default: replaced, with a note, once complete)")
    add_format_arguments(g)


def add_format_arguments(group: Any) -> None:
    """Every format's own options (each added once), e.g. for a command that names its
    outputs itself (posestream batch)."""
    done: set[int] = set()
    for fmt in FORMATS.values():
        if fmt.add_arguments is not None and id(fmt.add_arguments) not in done:
            done.add(id(fmt.add_arguments))
            fmt.add_arguments(group)


def _npz_json_arguments(group: Any) -> None:
    group.add_argument("--landmarks", action="store_true",
                       help="also write MediaPipe's 33 landmarks (pixels, world mm, visibility) to .npz and .json")


def _npz_json_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"landmarks": bool(getattr(args, "landmarks", False))}


# --------------------------------------------------------------------------- npz
def render_npz(clip: Clip, path: Path, options: Mapping[str, Any]) -> None:
    """One person: posestream-poses-v1 (a frame axis). Several people (clip.multi):
    posestream-people-v1, the same arrays with a person axis after the frame axis
    (realtime.journal.People) and track_ids (P,) instead of track_id (F,)."""
    if clip.multi:
        pp = clip.people()
        _save_npz(path, pp, clip.fps, NPZ_PEOPLE_FORMAT, options, track_ids=pp.track_ids)
    else:
        _save_npz(path, clip, clip.fps, NPZ_FORMAT, options, track_id=clip.track_id)


def _save_npz(path: Path, src: Any, fps: float, fmt: str, options: Mapping[str, Any], **ids: np.ndarray) -> None:
    """The .npz of `src` (a Clip or its People: the same array names)."""
    arrays: dict[str, np.ndarray] = dict(
        joints_mm=src.joints_mm, translation_mm=src.translation_mm, joints_2d_px=src.joints_2d_px,
        confidence=src.confidence, fbi=src.fbi, valid=src.valid, index=src.index,
        timestamps_s=src.timestamps_s, fps=np.float64(fps), image_size=src.image_size, **ids,
        joint_names=np.array(JOINT_NAMES), parents=np.array(PARENTS, np.int64),
        units=np.array(NPZ_UNITS), format=np.array(fmt))
    if options.get("landmarks"):
        arrays.update(landmarks_px=src.landmarks_px, landmarks_world_mm=src.landmarks_world_mm,
                      landmarks_visibility=src.landmarks_visibility, landmark_names=np.array(MP_LANDMARK_NAMES))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def NpzWriter(path: str | Path, fps: float) -> Recording:  # noqa: N802 - the name earlier versions exported
    """A Recording with one .npz output."""
    if Path(path).suffix.lower() != ".npz":
        raise UserError(f"{path} is not an .npz name")
    return Recording([path], fps)


def recover_npz(path: str | Path) -> Path:
    """Finalise OUT.npz from the journal OUT.npz.part left by a crashed run; returns OUT."""
    recover(part_path(Path(path)), say=lambda _m: None)
    return Path(path)


# What read_pose_npz needs, per frame: name -> (shape after the frame axis, accepted dtype kinds).
# `valid` comes first: its length is the number of frames T.
_NPZ_FIELDS = {"valid": ((), "b"), "joints_mm": ((NUM_JOINTS, 3), "fiu"), "translation_mm": ((3,), "fiu"),
               "joints_2d_px": ((NUM_JOINTS, 2), "fiu"), "confidence": ((NUM_JOINTS,), "fiu"),
               "fbi": ((NUM_FBI_BONES, 3), "fiu"), "index": ((), "iu"), "timestamps_s": ((), "fiu"),
               "image_size": ((2,), "iu")}
# Arrays later writers add (track ids; MediaPipe's landmarks with --landmarks): read back when
# present with these shapes, otherwise left out (0 / None), as files without them are.
_NPZ_OPTIONAL = {"track_id": ((), "iu"), "landmarks_px": ((NUM_MP_LANDMARKS, 2), "f"),
                 "landmarks_world_mm": ((NUM_MP_LANDMARKS, 3), "f"), "landmarks_visibility": ((NUM_MP_LANDMARKS,), "f")}
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
            if "format" in d.files and str(d["format"]) == NPZ_PEOPLE_FORMAT:
                return _read_people_npz(path, d)
            if "format" not in d.files or str(d["format"]) != NPZ_FORMAT:
                raise UserError(f"{path} is not a posestream pose file (format {NPZ_FORMAT!r} expected)")
            missing = [k for k in _NPZ_FIELDS if k not in d.files]
            if missing:
                raise UserError(f"{path} is not a complete posestream pose file: no {', '.join(missing)}")
            a = {k: d[k] for k in _NPZ_FIELDS}
            opt = {k: d[k] for k in _NPZ_OPTIONAL if k in d.files}
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
    opt = {k: v for k, v in opt.items() if v.shape == (n, *_NPZ_OPTIONAL[k][0]) and v.dtype.kind in _NPZ_OPTIONAL[k][1]}
    track = opt.get("track_id")
    lm = [opt.get(k) for k in ("landmarks_px", "landmarks_world_mm", "landmarks_visibility")]
    has_lm = (np.isfinite(lm[0]).all(axis=(1, 2)) if all(x is not None for x in lm) else np.zeros(n, bool))
    out = []
    for i in range(n):
        fbi = None if np.isnan(F[i]).all() else F[i]
        landmarks = [x[i] if has_lm[i] else None for x in lm]  # type: ignore[index]
        out.append(PoseFrame(int(idx[i]), float(ts[i]), bool(valid[i]), J[i], T[i], UV[i], C[i],
                             (int(size[i, 0]), int(size[i, 1])), fbi, {}, int(track[i]) if track is not None else 0,
                             *landmarks))
    return out


def _read_people_npz(path: Path, d: Any) -> list[PoseFrame]:
    """The frames of a several-people file (posestream-people-v1), each with its people."""
    need = {"valid": 2, "track_ids": 1, "joints_mm": 4, "translation_mm": 3, "joints_2d_px": 4, "confidence": 3,
            "fbi": 4, "index": 1, "timestamps_s": 1, "image_size": 2}
    missing = [k for k in need if k not in d.files]
    if missing:
        raise UserError(f"{path} is not a complete posestream people file: no {', '.join(missing)}")
    a = {k: d[k] for k in need}
    F, P = a["valid"].shape if a["valid"].ndim == 2 else (-1, -1)
    want = {"valid": (F, P), "track_ids": (P,), "joints_mm": (F, P, NUM_JOINTS, 3), "translation_mm": (F, P, 3),
            "joints_2d_px": (F, P, NUM_JOINTS, 2), "confidence": (F, P, NUM_JOINTS), "fbi": (F, P, NUM_FBI_BONES, 3),
            "index": (F,), "timestamps_s": (F,), "image_size": (F, 2)}
    for k, shape in want.items():
        if a[k].shape != shape:
            raise UserError(f"{path}: {k} has shape {a[k].shape}, expected {shape} (F frames, P people)")
    out = []
    for f in range(F):
        size = (int(a["image_size"][f, 0]), int(a["image_size"][f, 1]))
        people = [PoseFrame(int(a["index"][f]), float(a["timestamps_s"][f]), True, a["joints_mm"][f, p],
                            a["translation_mm"][f, p], a["joints_2d_px"][f, p], a["confidence"][f, p], size,
                            None if np.isnan(a["fbi"][f, p]).all() else a["fbi"][f, p], {}, int(a["track_ids"][p]))
                  for p in range(P) if a["valid"][f, p]]
        out.append(PoseFrame.from_people(people, int(a["index"][f]), float(a["timestamps_s"][f]), size))
    return out


# --------------------------------------------------------------------------- json / csv
def _nested(a: np.ndarray) -> list:
    return [_nested(x) for x in a] if a.ndim > 1 else [_f(v) for v in a]


def render_json(clip: Clip, path: Path, options: Mapping[str, Any]) -> None:
    landmarks = bool(options.get("landmarks"))
    meta: dict[str, Any] = {"format": JSON_FORMAT, "fps": clip.fps if math.isfinite(clip.fps) else None,
                            "joint_names": list(JOINT_NAMES), "parents": list(PARENTS), "units": NPZ_UNITS}
    if landmarks:
        meta["landmark_names"] = list(MP_LANDMARK_NAMES)
    has_lm = clip.has_landmarks

    def person(i: int) -> dict[str, Any]:
        obj = {"track_id": int(clip.track_id[i]),
               "joints_mm": _nested(clip.joints_mm[i]), "translation_mm": _nested(clip.translation_mm[i]),
               "joints_2d_px": _nested(clip.joints_2d_px[i]), "confidence": _nested(clip.confidence[i])}
        if not np.isnan(clip.fbi[i]).all():
            obj["fbi"] = _nested(clip.fbi[i])
        if landmarks and has_lm[i]:
            obj["landmarks_px"] = _nested(clip.landmarks_px[i])
            obj["landmarks_world_mm"] = _nested(clip.landmarks_world_mm[i])
            obj["landmarks_visibility"] = _nested(clip.landmarks_visibility[i])
        return obj

    multi = clip.multi
    if multi:
        meta["format"] = JSON_PEOPLE_FORMAT
    with open(path, "w") as fh:
        fh.write('{"meta": ' + json.dumps(meta) + ',\n"frames": [\n')
        for k, g in enumerate(clip.groups()):
            i = int(g[0])
            obj = {"index": int(clip.index[i]), "timestamp_s": round(float(clip.timestamps_s[i]), 6)}
            if multi:  # the people found in the frame, by track id
                obj.update(image_size=[int(v) for v in clip.image_size[i]],
                           people=[person(int(r)) for r in sorted(g, key=lambda r: clip.track_id[r]) if clip.valid[r]])
            else:
                obj.update(valid=bool(clip.valid[i]), image_size=[int(v) for v in clip.image_size[i]], **person(i))
            fh.write(("" if k == 0 else ",\n") + json.dumps(obj, allow_nan=False))
        fh.write("\n]}\n")


def csv_header(people: bool = False) -> list[str]:
    cols = ["index", "timestamp_s", "valid", "image_w", "image_h", "tx_mm", "ty_mm", "tz_mm"]
    if people:
        cols.insert(1, "track_id")
    for n in JOINT_NAMES:
        cols += [f"{n}_x_mm", f"{n}_y_mm", f"{n}_z_mm", f"{n}_u_px", f"{n}_v_px", f"{n}_conf"]
    return cols


def render_csv(clip: Clip, path: Path, options: Mapping[str, Any]) -> None:
    def s(v: float) -> str:
        return "" if not math.isfinite(v) else f"{v:.3f}"

    multi = clip.multi
    with open(path, "w", newline="") as fh:
        fh.write(",".join(csv_header(multi)) + "\n")
        for i in range(len(clip)):
            vals = [str(int(clip.index[i]))] + ([str(int(clip.track_id[i])) if clip.valid[i] else ""] if multi else [])
            vals += [f"{clip.timestamps_s[i]:.6f}", str(int(clip.valid[i])),
                    str(int(clip.image_size[i, 0])), str(int(clip.image_size[i, 1]))]
            vals += [s(v) for v in clip.translation_mm[i].astype(np.float64)]
            J, UV, C = (a[i].astype(np.float64) for a in (clip.joints_mm, clip.joints_2d_px, clip.confidence))
            for j in range(NUM_JOINTS):
                vals += [s(v) for v in J[j]] + [s(v) for v in UV[j]] + [s(C[j])]
            fh.write(",".join(vals) + "\n")


# --------------------------------------------------------------------------- one file per person
def person_path(path: Path, track_id: int) -> Path:
    """Where one person's file of a several-people output goes: clip.bvh -> clip.person3.bvh."""
    return path.with_name(f"{path.stem}.person{int(track_id)}{path.suffix}")


def per_person(render: Callable[[Clip, Path, Mapping[str, Any]], None]) -> Callable[[Clip, Path, Mapping[str, Any]], None]:
    """A one-person renderer made to write one file per track of a several-people clip
    (`person_path`; each track's clip has every frame, theirs where they were found)."""
    def render_each(clip: Clip, path: Path, options: Mapping[str, Any]) -> None:
        if not clip.multi:
            render(clip, path, options)
            return
        ids = np.unique(clip.track_id[clip.valid])
        if not len(ids):  # nobody was ever found: the one-person file (every frame empty)
            render(clip, path, options)
        for tid in ids:
            render(clip.track(int(tid)), person_path(path, int(tid)), options)

    render_each.__doc__ = f"{render.__doc__} Several people: one file per track (person_path)."
    return render_each


# --------------------------------------------------------------------------- formats
def _render_openpose(clip: Clip, path: Path, options: Mapping[str, Any]) -> None:
    from realtime.openpose import render_openpose

    render_openpose(clip, path, options)


FORMATS: dict[str, OutputFormat] = {f.suffix: f for f in (
    OutputFormat(".npz", "numpy arrays (posestream-poses-v1)", render_npz,
                 add_arguments=_npz_json_arguments, options=_npz_json_options),
    OutputFormat(".json", "one JSON document, a frame per line", render_json,
                 add_arguments=_npz_json_arguments, options=_npz_json_options),
    OutputFormat(".csv", "a row per frame", render_csv),
    OutputFormat(".bvh", "motion capture for animation tools (several people: a file per person)",
                 per_person(render_bvh), add_arguments=add_bvh_arguments, options=bvh_options, per_person=True),
    OutputFormat(".openpose", "a folder of OpenPose-style per-frame JSON (BODY_25)", _render_openpose, folder=True),
)}
WRITERS = FORMATS  # the name earlier versions exported


def open_writer(path: str | Path, fps: float, overwrite: bool = True,
                say: Callable[[str], None] = logging.getLogger(__name__).info) -> Recording:
    """A Recording with the one output `path` (its format chosen by the extension); its notes
    (an existing file replaced, a leftover journal recovered) go to `say` (logged at INFO)."""
    return Recording([output_spec(path)], fps, overwrite=overwrite, say=say)
