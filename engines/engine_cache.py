"""On-disk cache of built TensorRT engines.

An engine is only valid for the exact ONNX, TensorRT version, GPU and build settings it was
built with, so the cache key is sha256 over:
    ONNX file sha256, TensorRT version, GPU name + compute capability, precision,
    batch profile (min, opt, max), INT8 calibration file sha256 (if any)
Each entry is two files in the cache dir (default ~/.cache/posestream/engines, or
$POSESTREAM_CACHE/engines, or an explicit dir):
    <key>.engine   the serialized engine
    <key>.json     what it was built from (the key fields), its size and sha256, and the
                   ONNX's posestream metadata (stage, I/O, contract)
Both are written atomically (temp file + os.replace), the .json last: an entry without a
matching .json is incomplete. A stale or corrupt entry (missing/unparsable .json, key fields
that disagree, a truncated or altered .engine, an engine the runtime refuses to deserialize)
is rebuilt and overwritten, with one line on stderr saying why; it never crashes the app.

TensorRT itself is not imported here: building and deserializing are passed in by
engines.backends.tensorrt_backend, which keeps this module testable without a GPU.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from engines import artifact
from engines.errors import UserError
from engines.stages import TensorSpec

PRECISIONS = ("fp32", "fp16", "int8")
E = TypeVar("E")


def default_cache_dir() -> Path:
    from engines.checkpoint import cache_root

    return cache_root() / "engines"


@dataclass(frozen=True)
class RuntimeEnv:
    """What an engine is tied to besides its ONNX: the TensorRT build and the GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


@dataclass(frozen=True)
class BuildPlan:
    """Everything the engine builder needs, fixed before any TensorRT call.
    Profile: every input gets (min_batch, opt_batch, max_batch) on axis 0 and its static
    dims elsewhere (e.g. (B, 3, 256, 256) for image stages)."""

    onnx_path: str
    onnx_sha256: str
    stage: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str = "fp32"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 64
    calib_path: str | None = None
    calib_sha256: str | None = None
    workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(f"batch profile must satisfy 1 <= min <= opt <= max, got "
                            f"({self.min_batch}, {self.opt_batch}, {self.max_batch})")
        if self.precision == "int8" and not self.calib_path:
            raise UserError("an int8 build needs calibration inputs (--calib FILE.npz)")

    @classmethod
    def for_onnx(cls, onnx_path: str | Path, precision: str = "fp32", max_batch: int = 64,
                 opt_batch: int = 1, calib: str | Path | None = None) -> "BuildPlan":
        from engines.checkpoint import file_sha256

        meta = artifact.read_onnx_metadata(onnx_path)
        artifact.check_contract(meta, str(onnx_path))
        if meta.get("precision", "fp32") != "fp32":
            raise UserError(f"{onnx_path} is {meta['precision']}; TensorRT engines are built from the FP32 ONNX "
                            f"(TensorRT applies --fp16/--int8 itself)")
        return cls(onnx_path=str(onnx_path), onnx_sha256=file_sha256(onnx_path), stage=meta["stage"],
                   inputs=artifact.tensor_specs(meta, "inputs"), outputs=artifact.tensor_specs(meta, "outputs"),
                   precision=precision, opt_batch=min(opt_batch, max_batch), max_batch=max_batch,
                   calib_path=str(calib) if calib else None,
                   calib_sha256=file_sha256(calib) if calib else None)

    def profile_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """input name -> (min, opt, max) shapes for the TensorRT optimisation profile."""
        return {t.name: tuple((b, *t.shape[1:]) for b in (self.min_batch, self.opt_batch, self.max_batch))
                for t in self.inputs}

    def key_fields(self, env: RuntimeEnv) -> dict[str, Any]:
        return {"onnx_sha256": self.onnx_sha256, "tensorrt_version": env.tensorrt_version,
                "gpu_name": env.gpu_name, "compute_capability": env.compute_capability,
                "precision": self.precision, "batch_profile": [self.min_batch, self.opt_batch, self.max_batch],
                "calib_sha256": self.calib_sha256, "workspace_bytes": self.workspace_bytes}

    def cache_key(self, env: RuntimeEnv) -> str:
        blob = json.dumps(self.key_fields(env), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]


def engine_sidecar(plan: BuildPlan, env: RuntimeEnv, engine_bytes: bytes) -> dict[str, Any]:
    """The .json written next to an engine: key fields + integrity + the ONNX's metadata."""
    onnx_meta = artifact.read_onnx_metadata(plan.onnx_path)
    return {"key": plan.key_fields(env), "engine_size": len(engine_bytes),
            "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(), "onnx_metadata": onnx_meta,
            "onnx_file": Path(plan.onnx_path).name, "max_batch": plan.max_batch,
            "environment": asdict(env)}


def write_entry(engine_path: Path, sidecar_path: Path, engine_bytes: bytes, sidecar: dict[str, Any]) -> None:
    artifact.atomic_write_bytes(engine_path, engine_bytes)
    artifact.atomic_write_bytes(sidecar_path, json.dumps(sidecar, indent=1).encode())


def check_entry(engine_path: Path, sidecar_path: Path, expect_key: dict[str, Any] | None) -> tuple[bytes, dict]:
    """Read an engine + sidecar and verify them; raises ValueError(reason) when not usable.
    expect_key None checks integrity only (a user-supplied .engine); the caller then checks
    the environment fields itself."""
    if not sidecar_path.is_file():
        raise ValueError(f"no {sidecar_path.name}")
    if not engine_path.is_file():
        raise ValueError(f"no {engine_path.name}")
    try:
        side = json.loads(sidecar_path.read_text())
        key, size, sha = side["key"], side["engine_size"], side["engine_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable {sidecar_path.name} ({exc})") from None
    if expect_key is not None and key != expect_key:
        diff = sorted(k for k in set(key) | set(expect_key) if key.get(k) != expect_key.get(k))
        raise ValueError(f"built for a different {', '.join(diff)}")
    data = engine_path.read_bytes()
    if len(data) != size:
        raise ValueError(f"engine file is {len(data)} bytes, expected {size} (truncated?)")
    if hashlib.sha256(data).hexdigest() != sha:
        raise ValueError("engine file checksum differs from its record")
    return data, side


class EngineCache:
    """Built engines on disk, keyed by BuildPlan.cache_key(env)."""

    def __init__(self, root: str | Path | None = None, log: Callable[[str], None] | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.log = log or (lambda msg: print(f"posestream: {msg}", file=sys.stderr))

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.engine", self.root / f"{key}.json"

    def get_or_build(self, plan: BuildPlan, env: RuntimeEnv, build: Callable[[BuildPlan], bytes],
                     deserialize: Callable[[bytes], E | None]) -> tuple[E, dict[str, Any], bool]:
        """Return (engine, sidecar, built_now). `deserialize` returns None or raises on a bad
        engine; then the entry is rebuilt once. A freshly built engine that will not
        deserialize is a real error (UserError)."""
        key = plan.cache_key(env)
        engine_path, sidecar_path = self.paths(key)
        if engine_path.exists() or sidecar_path.exists():
            try:
                data, side = check_entry(engine_path, sidecar_path, plan.key_fields(env))
                engine = _try_deserialize(deserialize, data)
                if engine is None:
                    raise ValueError("TensorRT could not deserialize it")
                return engine, side, False
            except (ValueError, OSError) as exc:
                self.log(f"engine cache entry {key} is unusable ({exc}); rebuilding")
        self.log(f"building TensorRT engine for {Path(plan.onnx_path).name} ({plan.precision}, batch "
                 f"{plan.min_batch}..{plan.max_batch}) on {env.gpu_name}; cached in {self.root}")
        data = build(plan)
        side = engine_sidecar(plan, env, data)
        write_entry(engine_path, sidecar_path, data, side)
        engine = _try_deserialize(deserialize, data)
        if engine is None:
            raise UserError(f"TensorRT built an engine for {plan.onnx_path} that it cannot deserialize")
        return engine, side, True


def _try_deserialize(deserialize: Callable[[bytes], E | None], data: bytes) -> E | None:
    try:
        return deserialize(data)
    except Exception:  # TensorRT raises assorted errors on garbage; all mean "rebuild"
        return None
