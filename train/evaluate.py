"""Evaluate Base/Final on an npz in the Human3.6M schema, a render set or real frames.

Paper table layout on any npz in the Human3.6M staged schema:

    posestream eval --data ../shared/data/h36m/h36m_val.npz --input sh [--model base_sh] [--json out.json]

With a folder for --data it evaluates images instead (train.eval_renders): a render set made
by `posestream render` (Base vs Final, --input mp|sh|gt) or the annotated real frames.

Prints, for Protocol 1 (MPJPE: root-aligned, mm) and Protocol 2 (P-MPJPE: after Procrustes
alignment with scale), the per-action table over all four cameras: the 15 Human3.6M actions
plus "Avg", the mean of the per-action errors (the paper's and Martinez et al.'s average).
It does this over all sequences, and again without the sequences whose ground truth is
known to be misaligned (MISALIGNED_SEQUENCES, from the data README) when the file has them.
The default model is the best shipped one for the chosen input: base_gt for gt,
temporal_ensemble_sh for sh (two temporal convolutions over 27 and 81 frames, averaged;
engines/temporal.py; `--model temporal_conv_sh` is the 27-frame one alone, `--model base_sh` the
single-frame Base). The default backend is `auto`: ONNX Runtime on a CPU, faster than torch
(`--backend torch`) for the same table (timings in docs/results.md).
A temporal lifter sees all rows of each sequence and camera at its own frame spacing, so the
file's row spacing must allow it (frame_step or the 50 Hz frame indices); it runs in its
sequence form (engines.models.SequenceForm: stretches of frames in, one output per frame),
which gives the per-window result with each layer computed once per frame.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.temporal import WindowSpec
from train.eval_common import EvalResult, format_table, open_model, result_from_json, run_in_chunks, save_report, summarize  # noqa: F401

MISALIGNED_SEQUENCES = ("S9/Greeting", "S9/SittingDown 1", "S9/Waiting 1")
DEFAULT_MODEL = {"gt": "base_gt", "sh": "temporal_ensemble_sh"}


def sequence_predictions(be, s, data: str, every: int):
    """A temporal lifter opened as its sequence stage, over every `every`-th sample of s, which
    holds all rows of `data`: each run is fed as stretches of frames at the model's spacing
    (engines.temporal.sequence_chunks), which gives what the model gives on each sample's
    window (train.h36m.windowed) at a fraction of the work. Returns ((M', 17, 3) mm, the M'
    samples)."""
    from engines.skeleton import NUM_JOINTS
    from engines.stages import stage_for
    from train import h36m

    spec = WindowSpec.from_metadata(be.metadata)
    chunk = stage_for(be.metadata["stage"]).outputs[0].shape[1]
    chunks, slot = h36m.sequence_input(s, data, spec.window, spec.causal, spec.spacing_ms, chunk)
    pred = run_in_chunks(be, {"features": chunks}, chunk=64).reshape(-1, NUM_JOINTS, 3)
    keep = np.arange(0, len(s), every)
    return pred[slot[keep]], s.subset(keep)


def _whole_stride(data: str, meta: dict) -> bool:
    """Whether the rows of `data` reach the model's frame spacing by a whole row stride."""
    from engines.temporal import row_stride
    from train import h36m

    try:
        row_stride(h36m.row_spacing_ms(data), WindowSpec.from_metadata(meta).spacing_ms)
    except UserError:
        return False
    return True


def evaluate(data: str, input_kind: str, model: str | None = None, backend: str = "auto",
             every: int = 1) -> dict:
    """Evaluate; returns the JSON-ready dict (see module docstring)."""
    from engines.normalize import features_2d
    from engines.stages import stage_for
    from train import h36m
    from train.metrics import mpjpe, p_mpjpe

    model = model or DEFAULT_MODEL[input_kind]
    h36m.check_archive(data)
    be, path = open_model(model, backend)
    try:
        stage = stage_for(be.metadata.get("stage"))
        cues = [t.name for t in stage.inputs if t.name != "features"]
        if cues:  # the Final model's refiner takes the generator's cues, computed from image crops
            raise UserError(f"--model {model} needs image cues ({', '.join(cues)}) as well as the 2D, and a "
                            f"Human3.6M .npz has no images: evaluate it on a render folder (posestream render) or "
                            f"the real-frames folder, or give --model one that lifts 2D alone (default for --input "
                            f"{input_kind}: {DEFAULT_MODEL[input_kind]})")
        sequence = stage.sequence
        if sequence and _whole_stride(data, be.metadata):  # a temporal lifter: in sequence form
            be.close()
            be, path = open_model(model, backend, stage=sequence)
            pred, s = sequence_predictions(be, h36m.load(data, input_kind), data, every)
        elif sequence:  # rows no whole stride brings to the model's spacing: windows resampled by time
            spec = WindowSpec.from_metadata(be.metadata)
            x, s = h36m.windowed(h36m.load(data, input_kind), data, spec.window, spec.causal, spec.spacing_ms, every)
            pred = run_in_chunks(be, {"features": x}, chunk=1024)
        else:
            s = h36m.load(data, input_kind, every=every)
            pred = run_in_chunks(be, {"features": features_2d(s.uv, s.f, s.c)})
    finally:
        be.close()
    e1 = mpjpe(pred, s.joints_cam)
    e2 = p_mpjpe(pred, s.joints_cam)
    res = summarize(e1, e2, s.action, s.action_names)
    out = {**res.to_json(), "model": path, "input": input_kind, "data": str(data), "cameras": 4}
    bad = [i for i, n in enumerate(s.seq_names) if n in MISALIGNED_SEQUENCES]
    if bad:
        keep = ~np.isin(s.seq, bad)
        out["excluding_misaligned"] = {**summarize(e1[keep], e2[keep], s.action[keep], s.action_names).to_json(),
                                       "excluded_sequences": [s.seq_names[i] for i in bad]}
    return out


def report_markdown(out: dict) -> str:
    lines = [f"model `{Path(out['model']).name}`, input `{out['input']}`, data `{Path(out['data']).name}`, "
             f"{out['frames']} samples (frames x cameras)", "", format_table("all sequences", result_from_json(out))]
    if "excluding_misaligned" in out:
        ex = out["excluding_misaligned"]
        lines += ["", format_table("without " + ", ".join(ex["excluded_sequences"]), result_from_json(ex))]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from realtime.cli_options import positive_int

    p.add_argument("--data", required=True,
                   help="npz in the Human3.6M staged schema, a render folder (posestream render), "
                        "or the annotated real-frames folder (../shared/data/media/frames)")
    # No default here: which inputs exist depends on --data (run() picks and checks), so a
    # given --input that the data lacks is refused rather than silently replaced.
    p.add_argument("--input", choices=("gt", "sh", "mp"), default=None,
                   help="2D input: projected ground truth, SH detections, or (render folders) MediaPipe "
                        "(default sh); the real-frames folder: mp (MediaPipe, its default) or gt = the annotated "
                        "2D, it has no SH detections; sequence render sets: their MediaPipe 2D only")
    p.add_argument("--compare", nargs="*", default=[], metavar="MODEL",
                   help="render/real-frame folders: more models in the same table (e.g. the Base lifters)")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: best for --input)")
    p.add_argument("--backend", default="auto",
                   help="runtime backend: auto (TensorRT, else ONNX Runtime, else torch), torch, onnxruntime, tensorrt")
    p.add_argument("--every", type=positive_int, default=1, help="evaluate every n-th row (default 1)")
    p.add_argument("--fixed-bones", action="store_true",
                   help="sequence render sets: each clip's poses with fixed bone lengths, as `posestream video` "
                        "writes them (realtime.filters.FILE_BODY)")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--md", default=None, help="write the markdown tables here")


def run(args: argparse.Namespace) -> int:
    from realtime.cli_options import check_report_paths

    t0 = time.time()
    data = Path(args.data)
    check_report_paths(args, "json", "md")
    if data.is_dir():
        from train import eval_renders

        from train.sequence_sets import is_sequence_set

        if getattr(args, "fixed_bones", False) and not is_sequence_set(data):
            raise UserError("--fixed-bones applies to sequence render sets (posestream render --sequence)")
        if is_sequence_set(data):
            from train import eval_sequences

            if args.input not in (None, "mp"):
                raise UserError(f"--input {args.input}: a sequence render set is evaluated on the MediaPipe 2D of "
                                f"its clips (VIDEO mode); it has no other 2D input (leave --input out)")

            models = [args.model, *args.compare] if args.model else list(eval_sequences.DEFAULT_MODELS)
            from realtime.filters import FILE_BODY

            out = eval_sequences.evaluate_sequence_set(args.data, models, args.backend,
                                                       FILE_BODY if getattr(args, "fixed_bones", False) else None)
            md = eval_sequences.sequence_markdown(out)
        elif (data / "manifest.json").is_file():
            out = eval_renders.evaluate_render_set(args.data, args.input or "sh", args.model or "final",
                                                   args.compare)
            md = eval_renders.render_markdown(out)
        else:
            if args.input == "sh":
                raise UserError(f"--input sh: {data} has no SH detections; a folder of real frames is evaluated "
                                f"on MediaPipe's 2D (--input mp, its default) or its annotated 2D (--input gt)")
            out = eval_renders.evaluate_real_frames(args.data, args.model or "final", args.compare,
                                                    input_kind=args.input or "mp")
            md = eval_renders.real_markdown(out)
    else:
        if getattr(args, "fixed_bones", False):
            raise UserError("--fixed-bones applies to sequence render sets (posestream render --sequence)")
        if args.input == "mp":
            raise UserError("--input mp needs a render folder or the real-frames folder (MediaPipe runs on images)")
        out = evaluate(args.data, args.input or "sh", args.model, args.backend, args.every)
        md = report_markdown(out)
    print(md)
    print(f"\n({time.time() - t0:.1f}s)")
    save_report(out, md, args.json, args.md)
    return 0
