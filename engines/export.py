"""Export a model stage to ONNX or a TensorRT engine.

    posestream export --model base_gt --format onnx [--int8] [--out PATH]
    posestream export --model base_gt --format tensorrt [--fp16] [--batch 64] [--out PATH]

ONNX: engines.onnx_export (opset 18, metadata with the contract and the source checkpoint's
sha256). TensorRT: the ONNX is built into an engine for this GPU
(engines.backends.tensorrt_backend), see docs/engines.md. `--format onnx --int8` writes a
dynamically quantised copy (INT8 weights) for ONNX Runtime on CPU.

Formats are one table, EXPORT_FORMATS: name -> (exporter, file suffix, needs a GPU).
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engines.artifact import check_writable_file
from engines.errors import UserError
from engines.onnx_export import export_onnx, onnx_for_checkpoint, quantize_onnx_int8


# ---- format table -------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportOptions:
    precision: str = "fp32"  # fp32 | fp16 (TensorRT) | int8 (ONNX: dynamic; TensorRT: calibrated)
    max_batch: int = 64      # TensorRT optimisation profile: batch 1..max_batch
    calib: Path | None = None  # int8 calibration inputs (.npz of stage input arrays)


def _export_onnx_fmt(model: Path, out: Path, opts: ExportOptions) -> Path:
    if opts.precision == "fp16":
        raise UserError("--fp16 applies to --format tensorrt (FP16 ONNX is not faster on CPU)")
    if opts.precision == "int8":
        return quantize_onnx_int8(model if model.suffix == ".onnx" else onnx_for_checkpoint(model), out)
    if model.suffix == ".onnx":
        raise UserError(f"{model} is already ONNX")
    return export_onnx(model, out)


def _export_tensorrt_fmt(model: Path, out: Path, opts: ExportOptions) -> Path:
    from engines.backends import tensorrt_backend as trt_backend
    from engines.engine_cache import BuildPlan

    onnx_path = model if model.suffix == ".onnx" else onnx_for_checkpoint(model)
    plan = BuildPlan.for_onnx(onnx_path, precision=opts.precision, max_batch=opts.max_batch, calib=opts.calib)
    return trt_backend.build_engine_file(plan, out)


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    needs_gpu: bool
    export: Callable[[Path, Path, ExportOptions], Path]


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", False, _export_onnx_fmt),
    "tensorrt": ExportFormat("tensorrt", ".engine", True, _export_tensorrt_fmt),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="shipped model name (base_gt) or a .pt/.onnx path")
    p.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS))
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="TensorRT: allow FP16 kernels")
    prec.add_argument("--int8", action="store_true",
                      help="ONNX: dynamic INT8 weights (ONNX Runtime); TensorRT: INT8 (+FP16), needs --calib")
    p.add_argument("--calib", type=Path, help="TensorRT INT8 calibration inputs: .npz, one array per stage input")
    p.add_argument("--batch", type=int, default=64, help="TensorRT: largest batch of the profile (default 64)")
    p.add_argument("--out", type=Path, help="output file (default: models/NAME[.fp16|.int8]<suffix>)")


def run(args: argparse.Namespace) -> int:
    from engines.checkpoint import MODELS_DIR, resolve_model_path

    fmt = EXPORT_FORMATS[args.format]
    if fmt.needs_gpu:
        from engines.backends.tensorrt_backend import gpu_present

        if not gpu_present():  # engines are built for, and only run on, the GPU that builds them
            raise UserError(f"--format {fmt.name} builds on the GPU it will run on; no CUDA GPU is visible here "
                            f"(needs an NVIDIA GPU and `pip install tensorrt cuda-python`)")
    src = Path(args.model)
    model = src if src.suffix == ".onnx" and src.is_file() else resolve_model_path(args.model, ".pt")
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.int8 and fmt.name == "tensorrt" and not args.calib:
        raise UserError("--format tensorrt --int8 needs --calib FILE.npz (representative inputs, one array per stage input)")
    if args.calib and not (args.int8 and fmt.name == "tensorrt"):  # it used to be ignored without a word
        raise UserError("--calib is the calibration input of --format tensorrt --int8"
                        + (" (ONNX's --int8 quantises the weights alone: it takes no calibration data)"
                           if fmt.name == "onnx" and args.int8 else ""))
    if args.calib and not args.calib.is_file():
        raise UserError(f"--calib: file not found: {args.calib}")
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    out = args.out or (MODELS_DIR / f"{model.stem}{'' if precision == 'fp32' else '.' + precision}{fmt.suffix}")
    if out.suffix != fmt.suffix:
        raise UserError(f"--out for {fmt.name} must end in {fmt.suffix}, got {out}")
    check_writable_file(out, "--out")  # a folder that cannot be written says so (it said "less than 100 MB free")
    existing = out.parent
    while not existing.exists():
        existing = existing.parent
    if shutil.disk_usage(existing).free < 100 << 20:
        raise UserError(f"less than 100 MB free next to {out}")
    path = fmt.export(model, out, ExportOptions(precision, args.batch, args.calib))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
