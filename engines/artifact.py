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
    """Write via a temp file in the same directory + os.replace: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """Decoded metadata_props of an ONNX file (weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UserError(f"cannot read ONNX file {path}: {exc}") from None
    return decode({p.key: p.value for p in model.metadata_props}, str(path))
