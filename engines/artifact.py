"""Artifact metadata: what every exported file (ONNX, TensorRT engine) says about itself.

Stored as string key/values (ONNX `metadata_props`; a JSON sidecar for engines). Every value
is JSON-encoded so lists and numbers round-trip exactly. Keys:
  format_version, stage, inputs, outputs (lists of {name, shape, dtype}, "batch" = dynamic),
  joint_names, fbi_rule_version, fbi_threshold, input_normalization, units (the contract,
  engines.checkpoint.contract_metadata), source_file, source_sha256 (the .pt it came from),
  opset, exporter, precision ("fp32" or "int8-dynamic"; absent = fp32).
No heavy imports here: the realtime app reads this without torch.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from engines.errors import UserError
from engines.stages import TensorSpec

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "stage", "inputs", "outputs", "joint_names", "fbi_rule_version",
                 "input_normalization", "source_sha256")


def encode(meta: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in meta.items()}


def decode(props: dict[str, str], where: str = "artifact") -> dict[str, Any]:
    """JSON-decode string props; UserError when it is not a posestream artifact. Keys other
    tools add (e.g. onnxruntime's quantiser) need not be JSON: they are kept as strings."""
    meta: dict[str, Any] = {}
    for k, v in props.items():
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError) as exc:
            if k in REQUIRED_KEYS:
                raise UserError(f"{where}: metadata {k!r} is not posestream JSON ({exc})") from None
            meta[k] = v
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{where} is not a posestream export (metadata lacks {', '.join(missing)}); "
                        f"export it with `posestream export`")
    if meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{where}: metadata format {meta['format_version']} is not {FORMAT_VERSION}; re-export it")
    return meta


def tensor_specs(meta: dict[str, Any], key: str) -> tuple[TensorSpec, ...]:
    """`inputs`/`outputs` metadata -> TensorSpecs (\"batch\" -> None)."""
    return tuple(TensorSpec(t["name"], tuple(None if d == "batch" else int(d) for d in t["shape"]))
                 for t in meta[key])


def check_contract(meta: dict[str, Any], where: str) -> None:
    """Refuse an artifact made under another joint order / FBI rule / normalisation: its
    outputs would silently mean something else."""
    from engines.checkpoint import contract_metadata

    now = contract_metadata()
    bad = [k for k in ("joint_names", "fbi_rule_version", "input_normalization") if meta.get(k) != now[k]]
    if bad:
        raise UserError(f"{where} was exported under a different contract ({', '.join(bad)} differ); re-export it")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + os.replace: readers never see a partial file.
    The file gets the mode a plain write would give it (an existing file's, else the umask's
    default), not the temp file's owner-only one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _plain_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain_mode(path: Path) -> int:
    """The permission bits open(path, "w") would leave: the existing file's, else 0o666 less
    the process's umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_report_text(path: Path, text: str) -> None:
    """A report (--json, --md) written as the user means it: a symlink through to its target
    (replaced atomically), a device or pipe (/dev/stdout, /dev/null) in place, anything else
    atomically (atomic_write_text)."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    atomic_write_text(target, text)


def check_writable_file(path: Path, what: str) -> None:
    """UserError, before any work, if a file cannot be written at `path`: a folder there, a
    file where a folder is needed, or a folder (the nearest one that exists) where a file
    cannot be created. It tries to create one: root passes os.access on read-only places
    such as /proc, and the user should learn that now, not after a long run. `what` names
    the option in the message (e.g. "--json")."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder: give a file name")
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():  # a device or pipe (/dev/stdout): written in place
        if os.access(path, os.W_OK):
            return
        raise UserError(f"{what} {path} cannot be written")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
    except OSError:
        raise UserError(f"{what} {path}: the folder {parent} is not writable") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write_bytes for text (UTF-8): reports (--json, --md) are never left half-written."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))


# ModelProto field numbers (onnx.proto3): metadata_props is a repeated StringStringEntryProto
# (key = 1, value = 2). Protobuf wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_ONNX_METADATA_FIELD = 14


def _varint(fh: Any) -> int | None:
    """One protobuf varint from a binary file, or None at the end of the file."""
    value = shift = 0
    while True:
        b = fh.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _string_pair(entry: bytes) -> tuple[str, str]:
    """StringStringEntryProto bytes -> (key, value)."""
    import io

    fields = {1: "", 2: ""}
    fh = io.BytesIO(entry)
    while (tag := _varint(fh)) is not None:
        field, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError("unexpected wire type in a metadata entry")
        n = _varint(fh)
        if n is None:
            raise ValueError("truncated metadata entry")
        fields[field] = fh.read(n).decode("utf-8")
    return fields[1], fields[2]


def onnx_metadata_props(path: str | Path) -> dict[str, str]:
    """The raw metadata_props of an ONNX file, read by walking the top-level protobuf fields
    and seeking past the graph: no onnx package needed (the runtime install has none), and
    the weights are never read, so listing the shipped models stays fast."""
    props: dict[str, str] = {}
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        while (tag := _varint(fh)) is not None:
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _varint(fh)
            elif wire in (1, 5):
                fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                n = _varint(fh)
                if n is None or fh.tell() + n > size:
                    raise ValueError("truncated field")
                if field == _ONNX_METADATA_FIELD:
                    key, value = _string_pair(fh.read(n))
                    props[key] = value
                else:
                    fh.seek(n, os.SEEK_CUR)
            else:
                raise ValueError(f"unsupported wire type {wire}")
    return props


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """Decoded metadata_props of an ONNX file (weights are not loaded; no onnx package)."""
    try:
        props = onnx_metadata_props(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ONNX file {path}: {exc}") from None
    return decode(props, str(path))
