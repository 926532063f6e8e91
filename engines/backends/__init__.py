"""Runtime backends behind one small protocol.

Every backend takes named float32 arrays and returns named arrays:
    run({"features": (B, 37)}) -> {"joints_mm": (B, 17, 3)}            (lifter)
Other stages (generator, refiner) follow the same pattern with their own names, recorded in
the artifact's metadata. One file per runtime: torch_backend, onnxruntime_backend,
tensorrt_backend. `open_backend` picks the module by name without string dispatch chains:
BACKENDS maps a user-facing name to a loader function.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """A loaded model on one runtime."""

    name: str
    metadata: dict

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
