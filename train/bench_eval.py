"""Batch-evaluation speed of a temporal lifter: per-window stage against its sequence form.

    python -m train.bench_eval [--data ../shared/data/h36m/h36m_val.npz] [--input sh]
        [--model temporal_ensemble_sh] [--backend auto] [--rounds 3]

Both paths predict every sample of the file on the same runtime: the windowed one builds each
sample's window (train.h36m.windowed) and runs the model's own stage; the sequence one runs its
*_sequence stage over stretches of frames (train.evaluate.sequence_predictions), which is what
`posestream eval` does. Rounds alternate the two so background load hits both alike; it prints
the median seconds of each, frames per second, the speed-up measured in this run and the largest
difference between the two predictions (mm).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from engines.errors import UserError


def bench(data: str, input_kind: str, model: str, backend: str, rounds: int) -> dict:
    from engines.stages import stage_for
    from train import h36m
    from train.evaluate import open_model, run_in_chunks, sequence_predictions

    windowed_be, _ = open_model(model, backend)
    sequence = stage_for(windowed_be.metadata.get("stage")).sequence
    if not sequence:
        windowed_be.close()
        raise UserError(f"{model} is a {windowed_be.metadata.get('stage')} model; the benchmark needs a temporal one")
    sequence_be, _ = open_model(model, backend, stage=sequence)
    s = h36m.load(data, input_kind)
    meta = windowed_be.metadata

    def windowed() -> np.ndarray:
        x, _ = h36m.windowed(s, data, int(meta["window"]), bool(meta["causal"]), float(meta["spacing_ms"]))
        return run_in_chunks(windowed_be, {"features": x})

    def in_sequence() -> np.ndarray:
        return sequence_predictions(sequence_be, s, data, 1)[0]

    times: dict[str, list[float]] = {"windowed": [], "sequence": []}
    preds: dict[str, np.ndarray] = {}
    try:
        for _ in range(rounds):
            for name, fn in (("windowed", windowed), ("sequence", in_sequence)):
                t = time.perf_counter()
                preds[name] = fn()
                times[name].append(time.perf_counter() - t)
    finally:
        windowed_be.close()
        sequence_be.close()
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"model": model, "backend": windowed_be.name, "frames": len(s), "median_s": med,
            "speedup": med["windowed"] / med["sequence"],
            "max_abs_diff_mm": float(np.abs(preds["windowed"] - preds["sequence"]).max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/h36m/h36m_val.npz")
    p.add_argument("--input", default="sh", choices=("gt", "sh"))
    p.add_argument("--model", default="temporal_ensemble_sh")
    p.add_argument("--backend", default="auto")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    try:
        r = bench(args.data, args.input, args.model, args.backend, max(1, args.rounds))
    except UserError as exc:
        print(f"bench_eval: {exc}", file=sys.stderr)
        return 2
    print(f"{r['model']} on {r['backend']}, {r['frames']} frames, median of {args.rounds} rounds")
    for name, sec in r["median_s"].items():
        print(f"  {name:9s} {sec:7.2f} s  {r['frames'] / sec:9,.0f} frames/s")
    print(f"  sequence form speed-up: {r['speedup']:.2f}x; largest difference {r['max_abs_diff_mm']:.2e} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
