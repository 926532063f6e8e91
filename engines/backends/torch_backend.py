"""Reference backend: the PyTorch checkpoint itself (CPU). Needs torch.

Any stage in `engines.stages.STAGES` loads here: the checkpoint's `kind` picks the spec (or
the `stage` asked for, when it is that kind's sequence form).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.checkpoint import load_checkpoint  # noqa: F401 - train/ imports it from here
from engines.errors import UserError
from engines.stages import StageSpec, check_inputs, resolve_stage
from engines.temporal import window_metadata


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: str | Path, threads: int | None = None, stage: str | None = None) -> None:
        """stage: run the checkpoint as its sequence form (engines.stages.resolve_stage)."""
        import torch

        if threads:
            torch.set_num_threads(threads)
        ck = load_checkpoint(checkpoint)
        self.stage: StageSpec = resolve_stage(ck.get("kind"), stage)
        self.model = self.stage.build(ck)
        self.metadata = {k: v for k, v in ck.items() if k != "model"}
        self.metadata.update(ck.get("artifact_meta") or {})  # as engines.export records it
        self.metadata.update(window_metadata(self.metadata))
        self.metadata["stage"] = self.stage.name
        self._torch = torch

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = check_inputs(self.stage.inputs, inputs)
        with self._torch.inference_mode():
            ys = self.model(*[self._torch.from_numpy(x) for x in xs])
        ys = ys if isinstance(ys, tuple) else (ys,)
        return {s.name: y.numpy() for s, y in zip(self.stage.outputs, ys)}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
