"""Model definitions (plain torch). Import only where torch is wanted: the realtime app
runs exported ONNX/TensorRT artifacts and never imports this module on those backends.

Lifter: Martinez et al. 2017, "A simple yet effective baseline for 3d human pose
estimation": Linear(in, 1024) -> [residual block of two (Linear, BatchNorm, ReLU,
Dropout)] x num_blocks -> Linear(1024, 17*3). Input z-scoring and output de-normalisation
by training statistics are buffers of the module, so an exported artifact takes raw
features (engines.normalize.features_2d) and returns root-relative millimetres.
Max-norm (||w_row|| <= max_norm) is applied after each optimiser step by `apply_max_norm`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from engines.normalize import LIFT_INPUT_DIM
from engines.skeleton import NUM_JOINTS


@dataclass(frozen=True)
class LifterConfig:
    in_dim: int = LIFT_INPUT_DIM
    hidden: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5
    max_norm: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Lifter(nn.Module):
    """features (B, in_dim) -> root-relative 3D joints (B, 17, 3) in millimetres."""

    def __init__(self, cfg: LifterConfig = LifterConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.BatchNorm1d(cfg.hidden),
                                 nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        self.blocks = nn.Sequential(*[_ResidualBlock(cfg.hidden, cfg.dropout) for _ in range(cfg.num_blocks)])
        self.out = nn.Linear(cfg.hidden, NUM_JOINTS * 3)
        self.register_buffer("in_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("in_std", torch.ones(cfg.in_dim))
        self.register_buffer("out_mean", torch.zeros(NUM_JOINTS * 3))
        self.register_buffer("out_std", torch.ones(NUM_JOINTS * 3))

    def set_normalization(self, in_mean: torch.Tensor, in_std: torch.Tensor,
                          out_mean: torch.Tensor, out_std: torch.Tensor) -> None:
        self.in_mean.copy_(in_mean)
        self.in_std.copy_(in_std.clamp_min(1e-6))
        self.out_mean.copy_(out_mean)
        self.out_std.copy_(out_std.clamp_min(1e-6))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) raw features -> (B, 51) z-scored outputs (what the loss sees)."""
        h = self.inp((x - self.in_mean) / self.in_std)
        return self.out(self.blocks(h))

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.out_std + self.out_mean).reshape(-1, NUM_JOINTS, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.denormalize(self.forward_normalized(x))


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Clamp the L2 norm of every Linear layer's incoming weight vectors (rows) to max_norm."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.copy_(torch.renorm(m.weight, p=2, dim=0, maxnorm=max_norm))
