"""The refiner (paper step 4): concat(2D features, coarse 3D, FBI probabilities) -> the
Martinez lifter's two cascaded residual blocks (1024 units, BatchNorm, ReLU, dropout 0.5,
max-norm) -> root-relative 3D (mm). Trained with the weighted loss (train.train_refiner).

Inputs (exported stage "refiner"):
    features  (B, 37) engines.normalize.features_2d of the 2D joints (image px, f, c)
    coarse_mm (B, 17, 3) the generator's coarse 3D, root-relative mm
    fbi_prob  (B, 14, 3) the generator's FBI probabilities
Output: joints_mm (B, 17, 3) root-relative camera-space mm.

The coarse pelvis is always (0, 0, 0), so only the other 16 joints enter (48 values); the
input z-scoring buffers of the inner Lifter then never divide a constant. RefinerConfig's
use_coarse / use_fbi switch the modalities off for the ablations (a refiner with neither is a
Base lifter trained on the same renders); the stage keeps its three inputs either way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from engines.generator import NUM_FBI_STATES
from engines.models import Lifter, LifterConfig
from engines.normalize import LIFT_INPUT_DIM, features_flip, mirror_map
from engines.skeleton import FBI_FLIP_PERMUTATION, FLIP_PERMUTATION, NUM_FBI_BONES, NUM_JOINTS


@dataclass(frozen=True)
class RefinerConfig:
    use_coarse: bool = True
    use_fbi: bool = True
    hidden: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5
    max_norm: float = 1.0
    flip_tta: bool = False          # average with the mirrored input (engines.models docstring)

    @property
    def in_dim(self) -> int:
        return (LIFT_INPUT_DIM + (NUM_JOINTS - 1) * 3 * self.use_coarse
                + NUM_FBI_BONES * NUM_FBI_STATES * self.use_fbi)

    def to_dict(self) -> dict:
        return asdict(self)


def refiner_input_flip(cfg: RefinerConfig) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal mirror over the concatenated input (Refiner.inputs): the 2D features as
    engines.normalize.features_flip; coarse 3D (joints 1..16) swaps left/right and negates x;
    the FBI probabilities swap left/right bones (a mirror keeps every bone's state)."""
    parts = [features_flip()]
    if cfg.use_coarse:  # the root is not an input; the other joints keep their order
        parts.append(mirror_map(np.asarray(FLIP_PERMUTATION[1:]) - 1, (-1.0, 1.0, 1.0)))
    if cfg.use_fbi:
        parts.append(mirror_map(FBI_FLIP_PERMUTATION, (1.0,) * NUM_FBI_STATES))
    offsets = np.cumsum([0] + [len(i) for i, _ in parts[:-1]])
    return (np.concatenate([i + off for (i, _), off in zip(parts, offsets)]).astype(np.int64),
            np.concatenate([s for _, s in parts]).astype(np.float32))


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig = RefinerConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.lifter = Lifter(LifterConfig(in_dim=cfg.in_dim, hidden=cfg.hidden, num_blocks=cfg.num_blocks,
                                          dropout=cfg.dropout, max_norm=cfg.max_norm, flip_tta=cfg.flip_tta),
                             input_flip=refiner_input_flip(cfg) if cfg.flip_tta else None)

    def inputs(self, features: torch.Tensor, coarse_mm: torch.Tensor, fbi_prob: torch.Tensor) -> torch.Tensor:
        """The concatenated (B, in_dim) input vector."""
        parts = [features]
        if self.cfg.use_coarse:
            parts.append(coarse_mm[:, 1:].flatten(1))
        if self.cfg.use_fbi:
            parts.append(fbi_prob.flatten(1))
        return torch.cat(parts, 1)

    def forward(self, features: torch.Tensor, coarse_mm: torch.Tensor, fbi_prob: torch.Tensor) -> torch.Tensor:
        return self.lifter(self.inputs(features, coarse_mm, fbi_prob))
