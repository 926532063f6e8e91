"""Reference backend: the PyTorch checkpoint itself (CPU). Needs torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.errors import UserError


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: str | Path, threads: int | None = None) -> None:
        import torch

        from engines.models import Lifter, LifterConfig

        if threads:
            torch.set_num_threads(threads)
        try:
            ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise UserError(f"cannot load checkpoint {checkpoint}: {exc}") from None
        if ck.get("kind") != "lifter":
            raise UserError(f"{checkpoint} is not a lifter checkpoint (kind={ck.get('kind')!r})")
        self.model = Lifter(LifterConfig(**ck["model_config"]))
        self.model.load_state_dict(ck["model"])
        self.model.eval()
        self.metadata = {k: v for k, v in ck.items() if k not in ("model",)}
        self._torch = torch

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs["features"], np.float32)
        assert x.ndim == 2 and x.shape[1] == self.model.cfg.in_dim, x.shape
        with self._torch.inference_mode():
            y = self.model(self._torch.from_numpy(x))
        return {"joints_mm": y.numpy()}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
