"""Runtime backends behind one small protocol.

Every backend takes named float32 arrays and returns named arrays:
    run({"features": (B, 37)}) -> {"joints_mm": (B, 17, 3)}            (lifter)
Other stages (generator, refiner) follow the same pattern with their own names, recorded in
the artifact's metadata. One file per runtime: torch_backend, onnxruntime_backend,
tensorrt_backend. `open_backend` picks the module by name without string dispatch chains:
BACKENDS maps a user-facing name to a loader function.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from engines.errors import UserError


@runtime_checkable
class Backend(Protocol):
    """A loaded model on one runtime."""

    name: str
    metadata: dict

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


# ---- opening a model on a runtime -----------------------------------------------------------
# model: a shipped name ("base_gt": models/base_gt.{engine,onnx,pt}) or a path to a .pt, .onnx
# or .engine file. Each runtime's loader takes what it can use and derives the rest:
#   torch       needs the .pt
#   onnxruntime uses the .onnx; from a .pt it exports one on first use (engines.onnx_export cache)
#   tensorrt    uses the .engine; from an .onnx/.pt it builds one into engines.engine_cache
# "auto" = the first of AUTO_ORDER whose runtime is usable here.

MODEL_SUFFIXES = (".engine", ".onnx", ".pt")


def _find_model_files(model: str) -> dict[str, Path]:
    """suffix -> file for a path or shipped name; UserError if nothing matches."""
    from engines.checkpoint import MODELS_DIR

    p = Path(model).expanduser()
    if p.suffix:
        if p.suffix not in MODEL_SUFFIXES:
            raise UserError(f"model file {p} must end in one of {', '.join(MODEL_SUFFIXES)}")
        if not p.is_file():
            raise UserError(f"model file {p} does not exist")
        return {p.suffix: p}
    found = {s: MODELS_DIR / f"{model}{s}" for s in MODEL_SUFFIXES if (MODELS_DIR / f"{model}{s}").is_file()}
    if not found:
        # derived files (NAME.int8.onnx, NAME.STAGE.onnx) are forms of NAME, not models
        shipped = sorted({q.stem for s in MODEL_SUFFIXES for q in MODELS_DIR.glob(f"*{s}") if "." not in q.stem})
        raise UserError(f"unknown model {model!r}: not a file, and not one of the shipped models "
                        f"({', '.join(shipped) or 'none found in ' + str(MODELS_DIR)})")
    return found


def shipped_models() -> dict[str, dict[str, Any]]:
    """Shipped model name -> its artifact metadata (stage, inputs, outputs, ...), read from
    the model's ONNX export without loading it; {} for a model with only a .pt or .engine (or
    an unreadable .onnx). Derived files (NAME.int8.onnx, NAME.STAGE.onnx) are forms of NAME,
    not models."""
    from engines import artifact
    from engines.checkpoint import MODELS_DIR

    found: dict[str, dict[str, Any]] = {}
    for path in sorted(q for s in MODEL_SUFFIXES for q in MODELS_DIR.glob(f"*{s}")):
        if "." in path.stem or path.stem in found and found[path.stem]:
            continue
        found[path.stem] = {}
        if path.suffix == ".onnx":
            try:
                found[path.stem] = artifact.read_onnx_metadata(path)
            except UserError:
                pass
    return dict(sorted(found.items()))


def _open_torch(files: dict[str, Path], **kw: Any) -> Backend:
    if ".pt" not in files:
        raise UserError(f"the torch backend needs the .pt checkpoint; have {', '.join(map(str, files.values()))}")
    from engines.backends.torch_backend import TorchBackend

    return TorchBackend(files[".pt"], threads=kw.get("threads"), stage=kw.get("stage"))


def _open_onnxruntime(files: dict[str, Path], **kw: Any) -> Backend:
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend

    # precision="int8" picks the dynamically quantised ONNX; other values (fp16 is a TensorRT
    # knob, so `auto` falling back here with it) mean the FP32 export.
    precision = "int8" if kw.get("precision") == "int8" else "fp32"
    if ".pt" in files:  # prefer an ONNX proven to come from this exact checkpoint
        from engines.onnx_export import onnx_for_checkpoint

        onnx_path = onnx_for_checkpoint(files[".pt"], kw.get("onnx_cache_dir"), precision, kw.get("stage"))
    elif ".onnx" in files:
        onnx_path = files[".onnx"]
    else:
        raise UserError(f"onnxruntime needs a .onnx or .pt model; have {', '.join(map(str, files.values()))}")
    return OnnxRuntimeBackend(onnx_path, threads=kw.get("threads"), providers=kw.get("providers"))


def _open_tensorrt(files: dict[str, Path], **kw: Any) -> Backend:
    if not _tensorrt_usable():
        raise UserError("TensorRT is not usable here (needs `pip install tensorrt cuda-python` and an NVIDIA GPU); "
                        "use --backend onnxruntime")
    from engines.backends.tensorrt_backend import open_tensorrt

    return open_tensorrt(files, **kw)


def _tensorrt_usable() -> bool:
    if find_spec("tensorrt") is None:
        return False
    from engines.backends.tensorrt_backend import gpu_present

    return gpu_present()


@dataclass(frozen=True)
class BackendEntry:
    open: Callable[..., Backend]
    usable: Callable[[], bool]


BACKENDS: dict[str, BackendEntry] = {
    "tensorrt": BackendEntry(_open_tensorrt, _tensorrt_usable),
    "onnxruntime": BackendEntry(_open_onnxruntime, lambda: find_spec("onnxruntime") is not None),
    "torch": BackendEntry(_open_torch, lambda: find_spec("torch") is not None),
}
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
ALIASES = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
BACKEND_CHOICES = ("auto", *BACKENDS)


def usable_backends() -> list[str]:
    """Runtimes usable on this machine, in `auto` preference order."""
    return [b for b in AUTO_ORDER if BACKENDS[b].usable()]


def open_backend(model: str, backend: str = "auto", **kw: Any) -> Backend:
    """Load `model` (shipped name or .pt/.onnx/.engine path) on `backend` ("auto", "tensorrt",
    "onnxruntime", "torch"). Keyword options: threads (CPU intra-op threads), providers
    (onnxruntime), onnx_cache_dir, engine_cache_dir, max_batch (tensorrt), precision
    (tensorrt: fp32/fp16/int8, default fp16, fp32 on TensorRT >= 11; onnxruntime from a .pt: "int8" = the dynamically
    quantised ONNX, anything else FP32; torch: ignored), stage (run a .pt as its sequence
    form, engines.stages.resolve_stage; an .onnx/.engine must already be that stage)."""
    be = _open_any(model, backend, **kw)
    stage = kw.get("stage")
    if stage and be.metadata.get("stage") != stage:
        got = be.metadata.get("stage")
        be.close()
        raise UserError(f"{model} is a {got} model, not {stage}; give its .pt checkpoint to run it as {stage}")
    return be


def _open_any(model: str, backend: str, **kw: Any) -> Backend:
    files = _find_model_files(str(model))
    name = ALIASES.get(backend, backend)
    if name == "auto":
        errors = []
        for cand in usable_backends():
            try:
                return BACKENDS[cand].open(files, **kw)
            except UserError as exc:  # e.g. torch has no .pt to open: try the next runtime
                errors.append(f"{cand}: {exc}")
                print(f"posestream: {cand} cannot open {model} ({exc}); trying the next backend", file=sys.stderr)
        raise UserError("no backend could open " + str(model) + ("; " + "; ".join(errors) if errors else
                        ": none of tensorrt, onnxruntime, torch is installed"))
    if name not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    return BACKENDS[name].open(files, **kw)
