"""The multimodal generator (paper step 2): two parallel convnets on the person crop.

    depth branch  -> coarse 3D: per-joint root-relative depth (mm) combined with the 2D joints
    FBI branch    -> for each of the 14 FBI bones, logits of (forward, backward, parallel)

Both branches are the same small network (`ConvBranch`) with a different head, so each can
be trained, fine-tuned (the depth branch adversarially) and timed on its own.

Input contract (exported stage "generator"):
    image       (B, 3, 256, 256) float32, RGB in [0, 1], the engines.crop 256x256 crop
    joints_crop (B, 17, 2) float32, the 2D joints in that crop's pixels
Outputs:
    coarse_mm   (B, 17, 3) float32, root-relative camera-space joints, mm
    fbi_prob    (B, 14, 3) float32, softmax over (forward, backward, parallel) per FBI bone

Why these choices (measured on this 2-core CPU, see docs/model_card.md):
  * The crop is average-pooled 2x to 128x128 inside the model: the 256 contract stays (the app
    crops once), and both branches cost a quarter of the FLOPs. `INPUT_SCALE` says so.
  * Conditioning on the 2D joints (the paper's option): Gaussian heatmaps of the 17 joints are
    concatenated at stride 4, and the last feature map is pooled per joint with the same
    heatmaps ("look where the joint is"), which tells the head which feature is which joint.
  * Coarse 3D is weak perspective: x, y = (joint - pelvis) in crop px times a predicted
    scale (mm per crop px), z = predicted root-relative depth. The crop is scaled to the
    person, so the scale varies little (prior SCALE_PRIOR_MM_PER_PX) and the branch learns
    the person's size from the image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from engines.crop import CROP_SIZE
from engines.skeleton import NUM_FBI_BONES, NUM_JOINTS, ROOT

NUM_FBI_STATES = 3
INPUT_SCALE = 2                 # the 256 crop is average-pooled by this factor
SCALE_PRIOR_MM_PER_PX = 8.0     # ~1.7 m person filling 1/1.25 of a 256 px crop
HEATMAP_STRIDE = 4              # heatmaps live at the stride-4 feature map (32x32 for 128 input)
HEATMAP_SIGMA = 1.5             # in heatmap cells
IMAGE_MEAN, IMAGE_STD = 0.45, 0.25


@dataclass(frozen=True)
class GeneratorConfig:
    widths: tuple[int, int, int, int] = (24, 48, 96, 128)  # stride 2, 4, 8, 16 feature widths
    head_hidden: int = 256
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def joint_heatmaps(joints_px: torch.Tensor, size: int, stride: float, sigma: float = HEATMAP_SIGMA) -> torch.Tensor:
    """(B, 17, 2) pixel coordinates -> (B, 17, size, size) unnormalised Gaussians on a grid of
    cells `stride` px wide (cell centres at (i + 0.5) * stride). Non-finite joints give zeros."""
    finite = torch.isfinite(joints_px).all(-1, keepdim=True)
    j = torch.where(finite, joints_px, torch.full_like(joints_px, -1e4)) / stride - 0.5
    grid = torch.arange(size, dtype=joints_px.dtype, device=joints_px.device)
    gx = torch.exp(-((grid[None, None, :] - j[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, 17, W)
    gy = torch.exp(-((grid[None, None, :] - j[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, 17, H)
    return gy[..., :, None] * gx[..., None, :]


class ConvBranch(nn.Module):
    """(B, 3, 128, 128) image + (B, 17, 2) joints in 256-crop px -> (B, out_dim)."""

    def __init__(self, out_dim: int, cfg: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        w1, w2, w3, w4 = cfg.widths
        self.stem = nn.Sequential(_conv(3, w1, 2), _conv(w1, w2, 2))                  # stride 4
        self.mid = nn.Sequential(_conv(w2 + NUM_JOINTS, w2), _conv(w2, w3, 2), _conv(w3, w3),  # stride 8
                                 _conv(w3, w4, 2), _conv(w4, w4))                   # stride 16
        self.head = nn.Sequential(nn.Linear(NUM_JOINTS * w4 + w4, cfg.head_hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(cfg.dropout), nn.Linear(cfg.head_hidden, out_dim))

    def forward(self, image_small: torch.Tensor, joints_crop: torch.Tensor) -> torch.Tensor:
        x = self.stem((image_small - IMAGE_MEAN) / IMAGE_STD)
        s4 = x.shape[-1]
        # joints are in 256-crop px; the stride-4 map of the 128 input has cells of 8 crop px
        hm = joint_heatmaps(joints_crop, s4, HEATMAP_STRIDE * INPUT_SCALE)
        x = self.mid(torch.cat([x, hm], 1))
        b, c, h, w = x.shape
        hm16 = joint_heatmaps(joints_crop, h, CROP_SIZE / h)                          # (B, 17, h, w)
        wts = hm16.reshape(b, NUM_JOINTS, h * w)
        wts = wts / (wts.sum(-1, keepdim=True) + 1e-6)
        per_joint = torch.matmul(wts, x.reshape(b, c, h * w).transpose(1, 2))         # (B, 17, C)
        glob = x.mean((2, 3))
        return self.head(torch.cat([per_joint.reshape(b, -1), glob], 1))


def coarse_from_depth(out: torch.Tensor, joints_crop: torch.Tensor) -> torch.Tensor:
    """Depth-branch output (B, 18) = 17 root-relative depths (m) + log scale, and the 2D joints
    (B, 17, 2) in crop px -> coarse 3D (B, 17, 3) mm, root-relative (weak perspective)."""
    depth_mm = out[:, :NUM_JOINTS] * 1000.0
    depth_mm = depth_mm - depth_mm[:, ROOT:ROOT + 1]
    scale = SCALE_PRIOR_MM_PER_PX * torch.exp(out[:, NUM_JOINTS:NUM_JOINTS + 1])       # (B, 1)
    xy = (joints_crop - joints_crop[:, ROOT:ROOT + 1]) * scale[:, :, None]
    return torch.cat([xy, depth_mm[..., None]], -1)


class Generator(nn.Module):
    """Both branches. `forward` is the exported contract (256 crop); `forward_small` takes the
    already pooled 128x128 image (training reads a cache of pooled crops)."""

    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.depth = ConvBranch(NUM_JOINTS + 1, cfg)
        self.fbi = ConvBranch(NUM_FBI_BONES * NUM_FBI_STATES, cfg)

    def forward_small(self, image_small: torch.Tensor, joints_crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (coarse_mm (B, 17, 3), fbi_logits (B, 14, 3))."""
        coarse = coarse_from_depth(self.depth(image_small, joints_crop), joints_crop)
        logits = self.fbi(image_small, joints_crop).reshape(-1, NUM_FBI_BONES, NUM_FBI_STATES)
        return coarse, logits

    def forward(self, image: torch.Tensor, joints_crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small = F.avg_pool2d(image, INPUT_SCALE)
        coarse, logits = self.forward_small(small, joints_crop)
        return coarse, torch.softmax(logits, -1)


def pool_images_uint8(images: "np.ndarray") -> "np.ndarray":  # noqa: F821 (numpy in a string annotation)
    """(N, 256, 256, 3) uint8 -> (N, 128, 128, 3) uint8 by the model's 2x average pooling
    (rounded), so a training cache of pooled crops sees what `Generator.forward` sees."""
    import numpy as np

    n, h, w, c = images.shape
    assert (h, w) == (CROP_SIZE, CROP_SIZE), images.shape
    s = INPUT_SCALE
    x = images.reshape(n, h // s, s, w // s, s, c).astype(np.float32).mean((2, 4))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
