"""Per-stage latency benchmark across runtimes: the body of `posestream bench --stages`.

    python -m engines.bench_stages [--model base_gt ...] [--backends torch,onnxruntime] \
        [--batches 1,64] [--threads 2] [--seconds 4]

For every model (one per stage: lifter now; generator and refiner later) and every runtime
usable here (engines.backends.usable_backends, or --backends), it times `backend.run` on
fixed inputs at each batch size (plus ONNX Runtime on the dynamically quantised INT8 ONNX,
labelled onnxruntime:int8) and prints a markdown table: median and p95 latency per call
(ms), throughput (samples/s = batch / median) and the largest absolute output difference
from the torch backend on the same inputs (outputs in mm for the lifter). Runtimes are measured interleaved, in
rounds, so background load (training on the same cores) hits all of them alike; the
torch / ONNX Runtime ratio printed at the end comes from this one run. "Pipeline minus 2D" is
the sum of the stage medians for a runtime (the 2D detector is timed by realtime/bench.py).

When no model is given it times the Final model's stages (models/generator.pt and
models/final.pt, the refiner) if shipped, else models/base_gt.pt, else the newest runs/*/best.pt, else a
freshly initialised Lifter (latency does not depend on the weights; the table says so).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError


@dataclass(frozen=True)
class Timing:
    model: str
    stage: str
    backend: str
    batch: int
    times_s: tuple[float, ...]
    max_abs_diff: float | None = None  # vs the torch backend on the same inputs (None: no torch)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.times_s) * 1e3)

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.times_s, 95) * 1e3)

    @property
    def throughput(self) -> float:
        return self.batch / (self.median_ms / 1e3)


def default_models(tmp: Path) -> list[tuple[str, str]]:
    """[(label, model path or name)]: see the module docstring for the fallback order."""
    from engines.checkpoint import MODELS_DIR

    if (MODELS_DIR / "final.pt").is_file() and (MODELS_DIR / "generator.pt").is_file():
        return [("generator", "generator"), ("final (refiner)", "final")]  # the Final model's two stages
    if (MODELS_DIR / "base_gt.pt").is_file():
        return [("base_gt", "base_gt")]
    runs = sorted(Path(MODELS_DIR.parent, "runs").glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    if runs:
        return [(f"{runs[-1].parent.name}/best.pt", str(runs[-1]))]
    import torch

    from engines.checkpoint import contract_metadata
    from engines.models import Lifter, LifterConfig

    path = tmp / "untrained_lifter.pt"
    torch.save({"model": Lifter().eval().state_dict(), "kind": "lifter", "model_config": LifterConfig().to_dict(),
                "contract": contract_metadata()}, path)
    return [("untrained lifter (same architecture)", str(path))]


def time_calls(fn, inputs: dict, budget_s: float, min_calls: int) -> list[float]:
    out, t_end = [], time.perf_counter() + budget_s
    while len(out) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn(inputs)
        out.append(time.perf_counter() - t0)
    return out


def measure(models: list[tuple[str, str]], backends: list[str], batches: list[int], threads: int,
            seconds: float, rounds: int = 5, log=print) -> list[Timing]:
    from engines.backends import open_backend
    from engines.stages import STAGES

    opened = {}  # (label, backend) -> (Backend, stage)
    for label, model in models:
        for b in backends:
            name, _, precision = b.partition(":")  # "onnxruntime:int8" = the quantised ONNX
            try:
                be = open_backend(model, name, threads=threads, max_batch=max(batches),
                                  **({"precision": precision} if precision else {}))
            except UserError as exc:
                log(f"skip {label} on {b}: {exc}")
                continue
            opened[(label, b)] = (be, STAGES[be.metadata["stage"]])
    if not opened:
        raise UserError("no model could be opened on any backend")
    inputs = {(k, n): st.example_inputs(n, seed=1) for k, (_, st) in opened.items() for n in batches}
    for k, (be, _) in opened.items():  # warm-up: first-call allocation, ORT arena, torch kernels
        for n in batches:
            for _ in range(3):
                be.run(inputs[(k, n)])
    diffs = {}  # parity vs torch on the same inputs, largest batch, max over all outputs
    for (label, b), (be, _) in opened.items():
        ref = opened.get((label, "torch"))
        if ref is not None:
            x = inputs[((label, b), max(batches))]
            want, got = ref[0].run(x), be.run(x)
            diffs[(label, b)] = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    samples: dict[tuple, list[float]] = {(k, n): [] for k in opened for n in batches}
    per = seconds / (rounds * len(samples))
    for _ in range(rounds):  # interleaved so background load is shared fairly
        for (k, n), acc in samples.items():
            acc.extend(time_calls(opened[k][0].run, inputs[(k, n)], per, min_calls=5))
    out = [Timing(k[0], opened[k][1].name, k[1], n, tuple(v), diffs.get(k)) for (k, n), v in samples.items()]
    for be, _ in opened.values():
        be.close()
    return out


def render(timings: list[Timing], threads: int) -> str:
    lines = ["| stage | model | backend | batch | median ms | p95 ms | samples/s | calls | max abs diff vs torch |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in timings:
        diff = "-" if t.max_abs_diff is None else f"{t.max_abs_diff:.2g}"
        lines.append(f"| {t.stage} | {t.model} | {t.backend} | {t.batch} | {t.median_ms:.3f} | {t.p95_ms:.3f} | "
                     f"{t.throughput:,.0f} | {len(t.times_s)} | {diff} |")
    lines.append("")
    backends = sorted({t.backend for t in timings})
    batches = sorted({t.batch for t in timings})
    pipe = {(b, n): sum(t.median_ms for t in timings if t.backend == b and t.batch == n)
            for b in backends for n in batches}
    lines.append("| pipeline minus 2D (sum of stage medians) | " + " | ".join(f"batch {n}" for n in batches) + " |")
    lines.append("|---|" + "---:|" * len(batches))
    for b in backends:
        lines.append(f"| {b} | " + " | ".join(f"{pipe[(b, n)]:.3f} ms" for n in batches) + " |")
    for other in ("onnxruntime", "onnxruntime:int8"):
        if {"torch", other} <= set(backends):
            lines.append("")
            for n in batches:
                r = pipe[("torch", n)] / pipe[(other, n)]
                what = "ONNX Runtime" if other == "onnxruntime" else "ONNX Runtime INT8 (dynamic quantisation)"
                lines.append(f"torch-CPU / {what}, pipeline minus 2D, batch {n}: **{r:.2f}x** "
                             f"({'ORT faster' if r > 1 else 'torch faster'}; {threads} intra-op threads each)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from engines.backends import BACKENDS, usable_backends

    p = argparse.ArgumentParser(prog="posestream bench --stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)  # when forwarded verbatim
    p.add_argument("--model", action="append", help="model name or .pt/.onnx/.engine path (repeatable)")
    p.add_argument("--backends", help=f"comma list from {', '.join(BACKENDS)}, each optionally :PRECISION "
                   f"(e.g. onnxruntime:int8, tensorrt:fp32) (default: all usable here + onnxruntime:int8)")
    p.add_argument("--batches", default="1,64", help="comma list of batch sizes (default 1,64)")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads for torch and ONNX Runtime")
    p.add_argument("--seconds", type=float, default=4.0, help="total timing budget (split over all cells)")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
        if any(b < 1 for b in batches):
            raise ValueError
    except ValueError:
        print(f"error: --batches must be positive integers, got {args.batches!r}", file=sys.stderr)
        return 2
    if args.backends:
        backends = args.backends.split(",")
    else:
        backends = usable_backends()
        backends += ["onnxruntime:int8"] if "onnxruntime" in backends else []
    unknown = [b for b in backends if b.partition(":")[0] not in BACKENDS]
    if unknown or args.threads < 1 or args.seconds <= 0:
        print(f"error: unknown backends {unknown}" if unknown else "error: --threads and --seconds must be > 0",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        try:
            models = [(m, m) for m in args.model] if args.model else default_models(Path(tmp))
            log = lambda m: print(m, file=sys.stderr)  # noqa: E731
            timings = measure(models, backends, batches, args.threads, args.seconds, log=log)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    import platform

    print(f"## Stage latency ({platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{time.strftime('%Y-%m-%d %H:%M')})\n")
    print(render(timings, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
