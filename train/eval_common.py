"""What the evaluation commands share (train.evaluate for Human3.6M files, train.eval_renders
for render sets and real frames): the per-action result table, opening a model and chunked inference."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import UserError


@dataclass(frozen=True)
class EvalResult:
    """Per-action and average errors in mm. per_action maps action -> (mpjpe, p_mpjpe, frames)."""

    mpjpe_mm: float
    p_mpjpe_mm: float
    per_action: dict[str, tuple[float, float, int]]
    frames: int

    def to_json(self) -> dict:
        return {"mpjpe_mm": self.mpjpe_mm, "p_mpjpe_mm": self.p_mpjpe_mm, "frames": self.frames,
                "per_action": {a: {"mpjpe_mm": m, "p_mpjpe_mm": p, "frames": n}
                               for a, (m, p, n) in self.per_action.items()}}


def summarize(err1: np.ndarray, err2: np.ndarray, action: np.ndarray, action_names: tuple[str, ...]) -> EvalResult:
    """Per-sample errors (M,) and action indices (M,) -> per-action table and its average."""
    per: dict[str, tuple[float, float, int]] = {}
    for i, name in enumerate(action_names):
        m = action == i
        if m.any():
            per[name] = (float(err1[m].mean()), float(err2[m].mean()), int(m.sum()))
    if not per:
        raise UserError("no samples to evaluate")
    return EvalResult(float(np.mean([v[0] for v in per.values()])), float(np.mean([v[1] for v in per.values()])),
                      per, int(len(err1)))


def format_table(title: str, res: EvalResult) -> str:
    """Markdown table: rows Protocol 1 / Protocol 2, columns the actions + Avg (paper layout)."""
    names = list(res.per_action)
    head = "| " + title + " | " + " | ".join(names) + " | Avg |"
    sep = "|---" * (len(names) + 2) + "|"
    r1 = "| Protocol 1 (MPJPE) | " + " | ".join(f"{res.per_action[n][0]:.1f}" for n in names) + f" | {res.mpjpe_mm:.1f} |"
    r2 = "| Protocol 2 (P-MPJPE) | " + " | ".join(f"{res.per_action[n][1]:.1f}" for n in names) + f" | {res.p_mpjpe_mm:.1f} |"
    return "\n".join([head, sep, r1, r2])


def run_in_chunks(be, inputs: dict[str, np.ndarray], chunk: int = 4096) -> np.ndarray:
    """A backend's joints_mm over inputs with a long batch axis, `chunk` rows per call."""
    n = len(next(iter(inputs.values())))
    return np.concatenate([be.run({k: v[i:i + chunk] for k, v in inputs.items()})["joints_mm"]
                           for i in range(0, n, chunk)])


def result_from_json(d: dict) -> EvalResult:
    """An EvalResult from its to_json() form."""
    return EvalResult(d["mpjpe_mm"], d["p_mpjpe_mm"],
                      {a: (v["mpjpe_mm"], v["p_mpjpe_mm"], v["frames"]) for a, v in d["per_action"].items()},
                      d["frames"])


def open_model(model: str, backend: str = "torch", stage: str | None = None):
    """(backend, resolved .pt path) for a shipped name or checkpoint path; stage: run it as its
    sequence form (engines.stages.resolve_stage)."""
    from engines.checkpoint import resolve_model_path

    path = resolve_model_path(model)
    try:
        from engines.backends import open_backend  # ONNX Runtime / TensorRT when available
        be = open_backend(str(path), backend, stage=stage)
    except ImportError:
        from engines.backends.torch_backend import TorchBackend
        be = TorchBackend(path, stage=stage)
    return be, str(path)


def save_report(data: Any, md: str, json_path: str | Path | None, md_path: str | Path | None) -> None:
    """Write a command's result as JSON and its Markdown report, each where asked (None: not),
    atomically (realtime.cli_options.write_report: never half a file); the commands check the
    paths before their work (check_report_paths)."""
    from realtime.cli_options import write_report

    if json_path:
        write_report(json_path, json.dumps(data, indent=1))
    if md_path:
        write_report(md_path, md + "\n")
