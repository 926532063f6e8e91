"""PyTorch checkpoint -> ONNX: the export itself, dynamic INT8 quantisation, and the ONNX
that belongs to a checkpoint (a sibling file, else a cached export made on first use).

ONNX: opset 18 (torch dynamo exporter), dynamic batch axis, every other axis static (image
stages: 256x256). The contract (joint order, FBI rule version, input normalisation), the stage
name, input/output names and shapes and the source checkpoint's sha256 go into the ONNX
`metadata_props` (engines.artifact). Needs torch, onnx and onnxscript (the [train] extra) to
export; finding an existing export needs neither. The backends (engines.backends) call
`onnx_for_checkpoint` when given a .pt; `posestream export` (engines.export) is the command.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

from engines.errors import UserError

OPSET = 18


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The torch exporter's warnings (missing torchvision ops, deprecations) are noise to a
    user: hidden unless this module logs at INFO (`posestream -v`)."""
    if logging.getLogger(__name__).isEnabledFor(logging.INFO):
        yield
        return
    torch_onnx = logging.getLogger("torch.onnx")
    level = torch_onnx.level
    torch_onnx.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_onnx.setLevel(level)


def export_onnx(checkpoint: str | Path, out: str | Path, trace_batch: int = 2, stage: str | None = None) -> Path:
    """Export a posestream checkpoint (.pt) to ONNX at `out`, atomically (temp dir + replace),
    as its own stage or `stage` (its sequence form, engines.stages.resolve_stage).
    Returns `out`. Needs torch, onnx, onnxscript."""
    import onnx
    import torch

    from engines import artifact
    from engines.checkpoint import contract_metadata, file_sha256, load_checkpoint
    from engines.stages import resolve_stage
    from engines.temporal import window_metadata

    checkpoint, out = Path(checkpoint), Path(out)
    ck = load_checkpoint(checkpoint)
    stage = resolve_stage(ck.get("kind"), stage)
    contract = contract_metadata()
    if ck.get("contract") is not None and ck["contract"] != contract:
        diff = sorted(k for k in contract if ck["contract"].get(k) != contract[k])
        raise UserError(f"{checkpoint} was trained under another contract ({', '.join(diff)} differ from "
                        f"this code); retrain or check out matching code")
    model = stage.build(ck)
    example = tuple(torch.from_numpy(a) for a in stage.example_inputs(trace_batch).values())
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = tuple({0: batch} for _ in stage.inputs)
    meta = {
        "format_version": artifact.FORMAT_VERSION, "stage": stage.name,
        "inputs": [t.to_json() for t in stage.inputs], "outputs": [t.to_json() for t in stage.outputs],
        **contract, "source_file": checkpoint.name, "source_sha256": file_sha256(checkpoint),
        "opset": OPSET, "exporter": f"torch {torch.__version__} dynamo", "precision": "fp32",
        **(ck.get("artifact_meta") or {}),  # e.g. a refiner's companion generator
    }
    meta.update(window_metadata(meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with _exporter_quiet():
            torch.onnx.export(model, example, str(raw), dynamo=True, opset_version=OPSET, verbose=False,
                              input_names=[t.name for t in stage.inputs],
                              output_names=[t.name for t in stage.outputs], dynamic_shapes=dynamic)
        proto = onnx.load(str(raw))
        del proto.metadata_props[:]
        for k, v in artifact.encode(meta).items():
            proto.metadata_props.add(key=k, value=v)
        final = Path(tmp) / out.name
        # Protobuf caps one file at 2 GiB: bigger models keep their weights in OUT.data.
        big = proto.ByteSize() > 1_800_000_000
        onnx.save(proto, str(final), save_as_external_data=big, location=f"{out.name}.data")
        if big:
            os.replace(Path(tmp) / f"{out.name}.data", out.parent / f"{out.name}.data")
        os.replace(final, out)
    return out


def quantize_onnx_int8(src: str | Path, out: str | Path) -> Path:
    """Dynamic INT8 quantisation (onnxruntime.quantization): Gemm/MatMul weights stored as
    int8, activations quantised per call. 4x fewer weight bytes, which is what bounds the
    lifter at batch 1 on CPU; outputs change slightly (docs/engines.md has the measured MPJPE
    cost). Metadata is kept, with precision = "int8-dynamic". For ONNX Runtime only: the
    TensorRT builder takes the FP32 ONNX."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from engines import artifact

    src, out = Path(src), Path(out)
    meta = artifact.read_onnx_metadata(src)
    if meta.get("precision", "fp32") != "fp32":
        raise UserError(f"{src} is already {meta['precision']}; quantise the FP32 export")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        raw = Path(tmp) / "q.onnx"
        quantize_dynamic(str(src), str(raw), weight_type=QuantType.QInt8)
        proto = onnx.load(str(raw))
        props = {p.key: p.value for p in proto.metadata_props}
        props.update(artifact.encode({**meta, "precision": "int8-dynamic"}))
        del proto.metadata_props[:]
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)
        final = Path(tmp) / out.name
        onnx.save(proto, str(final))
        os.replace(final, out)
    return out


def _matches(path: Path, sha: str, precision: str, stage: str | None = None) -> bool:
    """`path` is a readable posestream ONNX exported from checkpoint `sha` at `precision`
    (and as `stage`, when given)."""
    from engines import artifact

    try:
        meta = artifact.read_onnx_metadata(path)
    except UserError:
        return False
    return (meta["source_sha256"] == sha and meta.get("precision", "fp32") == precision
            and stage in (None, meta.get("stage")))


ONNX_PRECISIONS = {"fp32": ("", "fp32"), "int8": (".int8", "int8-dynamic")}  # name -> (file infix, metadata)


def onnx_for_checkpoint(checkpoint: str | Path, cache_dir: str | Path | None = None,
                        precision: str = "fp32", stage: str | None = None) -> Path:
    """The ONNX for a .pt: a sibling NAME.onnx (NAME.int8.onnx for precision "int8",
    NAME.STAGE.onnx for another stage, the checkpoint's sequence form) exported from exactly
    this checkpoint (sha256, precision and stage match), else a cached export, made now if
    missing. Stale siblings are ignored, corrupt cache entries re-exported."""
    from engines.checkpoint import cache_root, file_sha256

    if precision not in ONNX_PRECISIONS:
        raise UserError(f"ONNX precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    infix, meta_precision = ONNX_PRECISIONS[precision]
    infix = f".{stage}{infix}" if stage else infix
    checkpoint = Path(checkpoint)
    sha = file_sha256(checkpoint)
    sibling = checkpoint.with_name(f"{checkpoint.stem}{infix}.onnx")
    if sibling.is_file():
        if _matches(sibling, sha, meta_precision, stage):
            return sibling
        print(f"posestream: {sibling} was not exported from {checkpoint.name}; using a fresh export",
              file=sys.stderr)
    root = Path(cache_dir) if cache_dir else cache_root() / "onnx"
    cached = root / sha[:16] / f"{checkpoint.stem}{infix}.onnx"
    if cached.is_file() and _matches(cached, sha, meta_precision, stage):
        return cached
    if precision == "int8":
        return quantize_onnx_int8(onnx_for_checkpoint(checkpoint, cache_dir, stage=stage), cached)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"no ONNX export of {checkpoint} yet and torch is not installed to make one; "
                        f"run `posestream export --model {checkpoint} --format onnx` where torch is") from None
    print(f"posestream: exporting {checkpoint.name} to ONNX (first use) -> {cached}", file=sys.stderr)
    return export_onnx(checkpoint, cached, stage=stage)


def refresh_shipped_onnx(models_dir: str | Path | None = None, log=print) -> list[Path]:
    """Export models/NAME.onnx for every models/NAME.pt that lacks one or whose ONNX came from
    another checkpoint, and NAME.STAGE.onnx for a temporal model's sequence form (set-up runs
    this, so neither the app's ONNX Runtime path nor a first evaluation waits for torch).
    Returns the files written."""
    from engines.checkpoint import MODELS_DIR, file_sha256, load_checkpoint
    from engines.stages import stage_for

    written = []
    for pt in sorted(Path(models_dir or MODELS_DIR).glob("*.pt")):
        sha = file_sha256(pt)
        sequence = stage_for(load_checkpoint(pt).get("kind")).sequence
        for stage in (None, sequence) if sequence else (None,):
            out = pt.with_name(f"{pt.stem}.{stage}.onnx" if stage else f"{pt.stem}.onnx")
            if out.is_file() and _matches(out, sha, "fp32", stage):
                continue
            log(f"exporting {out}")
            written.append(export_onnx(pt, out, stage=stage))
    return written
