"""Model definitions (plain torch). Import only where torch is wanted: the realtime app
runs exported ONNX/TensorRT artifacts and never imports this module on those backends.

Lifter: Martinez et al. 2017, "A simple yet effective baseline for 3d human pose
estimation": Linear(in, 1024) -> [residual block of two (Linear, BatchNorm, ReLU,
Dropout)] x num_blocks -> Linear(1024, 17*3). Input z-scoring and output de-normalisation
by training statistics are buffers of the module, so an exported artifact takes raw
features (engines.normalize.features_2d) and returns root-relative millimetres.
Max-norm (||w_row|| <= max_norm) is applied after each optimiser step by `apply_max_norm`.

Flip averaging (LifterConfig.flip_tta): forward() also lifts the horizontally mirrored input
and averages the two predictions after mirroring the second back (test-time augmentation, as
in VideoPose3D). It costs a batch of two (its gain on S9: docs/results.md). The input mirror is an
index/sign pair over the input vector, kept as buffers so that it is saved, loaded and exported
with the weights; training uses forward_normalized, which never mirrors.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.normalize import CUE_FRAME_INPUT, LIFT_INPUT_DIM, features_flip, mirror_map
from engines.skeleton import FLIP_PERMUTATION, NUM_JOINTS
from engines.temporal import DEFAULT_SPACING_MS, WindowSpec


@dataclass(frozen=True)
class LifterConfig:
    in_dim: int = LIFT_INPUT_DIM
    hidden: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5
    max_norm: float = 1.0
    flip_tta: bool = False
    window: int = 1                 # frames per input (TemporalLifter; 1 = the single-frame Lifter)
    causal: bool = False            # TemporalLifter: the reference frame is the window's last, not centre
    conv: bool = False              # TemporalConvLifter: strided temporal convolution, window 3**(num_blocks+1)
    spacing_ms: float = DEFAULT_SPACING_MS  # temporal: time between the window's frames
    frame_cues: tuple[str, ...] = ()  # temporal: cues in each frame's input (engines.normalize.features_2d_cues)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def frame_dim(self) -> int:
        """Inputs per frame of a temporal lifter (LIFT_INPUT_DIM, or CUE_FRAME_DIM with cues)."""
        return self.in_dim // self.window

    def window_spec(self) -> WindowSpec:
        """The window contract of a temporal lifter (engines.temporal)."""
        if self.frame_cues:
            return WindowSpec(self.window, self.causal, self.spacing_ms, CUE_FRAME_INPUT, tuple(self.frame_cues))
        return WindowSpec(self.window, self.causal, self.spacing_ms)


class PairedDropout(nn.Dropout):
    """nn.Dropout that, while `paired` is set, drops the same units in both halves of the batch
    (rows i and i + B/2). Training on pairs of nearby frames (the velocity loss,
    train.run_state.lifter_epoch) compares the outputs of the two halves: with independent
    masks their difference would be mostly dropout noise, which the loss would then fight by
    making the network insensitive to its own units. Identity in eval mode, no weights: a
    checkpoint or export does not see it."""

    paired: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.paired and self.p > 0):
            return super().forward(x)
        assert x.shape[0] % 2 == 0, x.shape
        keep = torch.empty_like(x[:x.shape[0] // 2]).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * torch.cat([keep, keep])


@contextmanager
def paired_dropout(model: nn.Module) -> Iterator[None]:
    """Within the block, every PairedDropout of `model` shares its mask between the two halves
    of the batch."""
    layers = [m for m in model.modules() if isinstance(m, PairedDropout)]
    for m in layers:
        m.paired = True
    try:
        yield
    finally:
        for m in layers:
            m.paired = False


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), PairedDropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), PairedDropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Lifter(nn.Module):
    """features (B, in_dim) -> root-relative 3D joints (B, 17, 3) in millimetres."""

    def __init__(self, cfg: LifterConfig = LifterConfig(),
                 input_flip: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """input_flip: (index, sign) over the in_dim inputs for flip averaging; defaults to
        engines.normalize.features_flip() when in_dim is the plain 2D feature width."""
        super().__init__()
        self.cfg = cfg
        self.inp, self.blocks, self.out = self._body(cfg)
        self.register_buffer("in_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("in_std", torch.ones(cfg.in_dim))
        self.register_buffer("out_mean", torch.zeros(NUM_JOINTS * 3))
        self.register_buffer("out_std", torch.ones(NUM_JOINTS * 3))
        if cfg.flip_tta:
            if input_flip is None:
                assert cfg.in_dim == LIFT_INPUT_DIM, "flip_tta with a custom input needs input_flip"
                input_flip = features_flip()
            index, sign = input_flip
            assert np.shape(index) == (cfg.in_dim,) and np.shape(sign) == (cfg.in_dim,)
            self.register_buffer("flip_in_index", torch.as_tensor(np.asarray(index), dtype=torch.long))
            self.register_buffer("flip_in_sign", torch.as_tensor(np.asarray(sign), dtype=torch.float32))
            out_index, out_sign = mirror_map(FLIP_PERMUTATION, (-1.0, 1.0, 1.0))
            self.register_buffer("flip_out_index", torch.as_tensor(out_index, dtype=torch.long))
            self.register_buffer("flip_out_sign", torch.as_tensor(out_sign))

    @staticmethod
    def _body(cfg: LifterConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(input layer, residual blocks, output layer) of the Martinez network."""
        inp = nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.BatchNorm1d(cfg.hidden),
                            nn.ReLU(inplace=True), PairedDropout(cfg.dropout))
        blocks = nn.Sequential(*[_ResidualBlock(cfg.hidden, cfg.dropout) for _ in range(cfg.num_blocks)])
        return inp, blocks, nn.Linear(cfg.hidden, NUM_JOINTS * 3)

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
        if not self.cfg.flip_tta:
            return self.denormalize(self.forward_normalized(x))
        n = x.shape[0]
        both = torch.cat([x, x.index_select(1, self.flip_in_index) * self.flip_in_sign], 0)
        y = self.denormalize(self.forward_normalized(both)).flatten(1)
        mirrored = y[n:].index_select(1, self.flip_out_index) * self.flip_out_sign
        return (0.5 * (y[:n] + mirrored)).reshape(-1, NUM_JOINTS, 3)


class TemporalLifter(Lifter):
    """features (B, window, 37), frames cfg.spacing_ms apart -> root-relative 3D
    joints (B, 17, 3), mm, of the reference frame (engines.temporal). The same Martinez network
    on the flattened window: a fully connected layer over a short window is as cheap as a
    dilated convolution and keeps the single-frame recipe (max-norm, BatchNorm, flip averaging
    with the per-frame mirror)."""

    def __init__(self, cfg: LifterConfig) -> None:
        from engines.temporal import window_flip

        assert cfg.in_dim % cfg.window == 0 and (cfg.frame_dim == LIFT_INPUT_DIM or not cfg.flip_tta), \
            (cfg.in_dim, cfg.window, cfg.flip_tta)
        super().__init__(cfg, window_flip(cfg.window) if cfg.flip_tta else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 3 and x.shape[1:] == (self.cfg.window, self.cfg.frame_dim), tuple(x.shape)
        return super().forward(x.flatten(1))

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """features (B, T, 37) of consecutive frames, T >= window -> joints (B, T - window + 1,
        17, 3), mm: output t is forward() on frames t .. t + window - 1, so it belongs to frame
        t + window // 2 (centred) or t + window - 1 (causal). Here every window is cut out and
        lifted; TemporalConvLifter shares the work between overlapping windows."""
        dim = self.cfg.frame_dim
        assert x.ndim == 3 and x.shape[2] == dim and x.shape[1] >= self.cfg.window, tuple(x.shape)
        batch, n = x.shape[0], x.shape[1] - self.cfg.window + 1
        windows = x.unfold(1, self.cfg.window, 1).transpose(2, 3)   # (B, n, window, dim)
        return self.forward(windows.reshape(-1, self.cfg.window, dim)).reshape(batch, n, NUM_JOINTS, 3)

    def check_sequence_form(self) -> None:
        """ValueError when forward_sequence would not equal forward on each window (never here:
        this form cuts the windows out)."""


class _FrameGroups(nn.Module):
    """(B, L, C) -> (B, L/3, width): each group of 3 consecutive frames through Linear, BatchNorm,
    ReLU, Dropout. A temporal convolution with kernel 3 and stride 3, written as a Linear so that
    max-norm applies to it and the exported graph is plain MatMuls."""

    def __init__(self, channels: int, width: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * channels, width)
        self.bn = nn.BatchNorm1d(width)
        self.drop = PairedDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, channels = x.shape[1], x.shape[2]
        h = self.linear(x.reshape(-1, length // 3, 3 * channels))
        width = h.shape[2]
        return self.drop(torch.relu(self.bn(h.reshape(-1, width)))).reshape(-1, length // 3, width)

    def dilated(self, h: torch.Tensor, dilation: int) -> torch.Tensor:
        """The same layer as a dilated convolution over a sequence (eval mode):
        (B, C, T) -> (B, width, T - 2 * dilation)."""
        width, channels = self.linear.out_features, self.linear.in_features // 3
        weight = self.linear.weight.reshape(width, 3, channels).permute(0, 2, 1)  # rows are (frame, channel)
        return torch.relu(self.bn(F.conv1d(h, weight, self.linear.bias, dilation=dilation)))


class _TemporalBlock(nn.Module):
    """VideoPose3D's residual block in its single-output form: a kernel-3 stride-3 temporal
    convolution then a 1x1 one; the skip path keeps the reference frame of each group of 3
    (the middle one, or the last when causal)."""

    def __init__(self, width: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.groups = _FrameGroups(width, width, dropout)
        self.mix = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                                 PairedDropout(dropout))
        self.ref = 2 if causal else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.groups(x)
        length, width = h.shape[1], h.shape[2]
        return x[:, self.ref::3] + self.mix(h.reshape(-1, width)).reshape(-1, length, width)

    def dilated(self, h: torch.Tensor, dilation: int) -> torch.Tensor:
        """The block over a sequence (eval mode): (B, width, T) -> (B, width, T - 2 * dilation)."""
        g = self.groups.dilated(h, dilation)
        linear, bn = self.mix[0], self.mix[1]
        g = torch.relu(bn(F.conv1d(g, linear.weight[:, :, None], linear.bias)))
        return h[:, :, self.ref * dilation:h.shape[2] - (2 - self.ref) * dilation] + g


class TemporalConvLifter(TemporalLifter):
    """features (B, window, 37) -> root-relative 3D joints (B, 17, 3), mm, of the reference
    frame: a dilated temporal convolution network (Pavllo et al. 2019, VideoPose3D) in the form
    it takes when it predicts one frame: every layer groups 3 consecutive frames (kernel 3,
    stride 3), so a window of 3**(num_blocks + 1) frames reduces to one. Unlike the flattened
    TemporalLifter, its weights are shared over time, which is what lets the window grow to
    seconds without the input layer growing with it. hidden is the channel width."""

    def __init__(self, cfg: LifterConfig) -> None:
        if cfg.window != 3 ** (cfg.num_blocks + 1):
            raise ValueError(f"a temporal convolution over {cfg.num_blocks} blocks needs a window of "
                             f"{3 ** (cfg.num_blocks + 1)} frames, got {cfg.window}")
        super().__init__(cfg)

    @staticmethod
    def _body(cfg: LifterConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
        blocks = nn.Sequential(*[_TemporalBlock(cfg.hidden, cfg.dropout, cfg.causal) for _ in range(cfg.num_blocks)])
        return _FrameGroups(cfg.frame_dim, cfg.hidden, cfg.dropout), blocks, nn.Linear(cfg.hidden, NUM_JOINTS * 3)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(B, window*37) raw flattened windows -> (B, 51) z-scored outputs."""
        h = ((x - self.in_mean) / self.in_std).reshape(-1, self.cfg.window, self.cfg.frame_dim)
        return self.out(self.blocks(self.inp(h)).reshape(-1, self.cfg.hidden))

    def check_sequence_form(self) -> None:
        """The sequence form z-scores every frame alike, which is what training does (the
        statistics of one frame tiled over the window); ValueError for any other input
        normalisation, under which forward_sequence would not equal forward."""
        for buf in (self.in_mean, self.in_std):
            if not torch.equal(buf, buf[:self.cfg.frame_dim].repeat(self.cfg.window)):
                raise ValueError("input statistics differ between the frames of the window: "
                                 "this model has no sequence form")

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """As TemporalLifter.forward_sequence, computed as VideoPose3D runs it: a dilated
        convolution (dilations 1, 3, 9, ...) over the whole sequence, each layer once per
        frame instead of once per window that contains the frame (eval mode only; see
        check_sequence_form)."""
        dim = self.cfg.frame_dim
        assert x.ndim == 3 and x.shape[2] == dim and x.shape[1] >= self.cfg.window, tuple(x.shape)
        batch = x.shape[0]
        if self.cfg.flip_tta:
            mirror = x.index_select(2, self.flip_in_index[:dim]) * self.flip_in_sign[:dim]
            x = torch.cat([x, mirror], 0)
        h = ((x - self.in_mean[:dim]) / self.in_std[:dim]).transpose(1, 2)
        h = self.inp.dilated(h, 1)
        for k, block in enumerate(self.blocks):
            h = block.dilated(h, 3 ** (k + 1))
        y = F.conv1d(h, self.out.weight[:, :, None], self.out.bias).transpose(1, 2)   # (B', n, 51)
        y = y * self.out_std + self.out_mean
        if self.cfg.flip_tta:
            y = 0.5 * (y[:batch] + y[batch:].index_select(2, self.flip_out_index) * self.flip_out_sign)
        return y.reshape(batch, -1, NUM_JOINTS, 3)


def temporal_lifter(cfg: LifterConfig) -> TemporalLifter:
    """The temporal lifter a config describes: TemporalConvLifter when cfg.conv, else TemporalLifter."""
    return (TemporalConvLifter if cfg.conv else TemporalLifter)(cfg)


class TemporalEnsemble(nn.Module):
    """features (B, window, 37) -> the mean of its members' root-relative joints (B, 17, 3), mm.
    Members are temporal lifters with the same reference frame (all centred or all causal) and
    windows no longer than `window`; each sees the part of the window it was trained on, the
    centre frames (the last ones when causal). Averaging networks of different kinds (flattened
    Martinez, temporal convolutions of different spans) cancels part of their errors."""

    def __init__(self, member_configs: list[LifterConfig], window: int) -> None:
        super().__init__()
        causal = {c.causal for c in member_configs}
        if not member_configs or len(causal) != 1:
            raise ValueError("an ensemble needs members that are all centred or all causal")
        if any(c.window > window or (c.window - window) % 2 for c in member_configs):
            raise ValueError(f"member windows {[c.window for c in member_configs]} do not fit a {window}-frame window")
        self.window, self.causal = window, causal.pop()
        self.members = nn.ModuleList(temporal_lifter(c) for c in member_configs)
        self.spans = [((window - c.window) if self.causal else (window - c.window) // 2, c.window)
                      for c in member_configs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 3 and x.shape[1:] == (self.window, LIFT_INPUT_DIM), tuple(x.shape)
        return torch.stack([m(x[:, lo:lo + w]) for m, (lo, w) in zip(self.members, self.spans)]).mean(0)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """features (B, T, 37), T >= window -> (B, T - window + 1, 17, 3): output t is forward()
        on frames t .. t + window - 1 (see TemporalLifter.forward_sequence). Each member runs
        over the frames its part of those windows covers."""
        assert x.ndim == 3 and x.shape[2] == LIFT_INPUT_DIM and x.shape[1] >= self.window, tuple(x.shape)
        n = x.shape[1]
        return torch.stack([m.forward_sequence(x[:, lo:n - (self.window - lo - w)])
                            for m, (lo, w) in zip(self.members, self.spans)]).mean(0)

    def check_sequence_form(self) -> None:
        """ValueError when a member has no sequence form (TemporalConvLifter.check_sequence_form)."""
        for m in self.members:
            m.check_sequence_form()


class TimeAveraged(nn.Module):
    """features (B, window + 2 reach, D) -> the mean (B, 17, 3) mm of a centred temporal
    lifter's outputs for the windows centred on the middle frame and on each of the `reach`
    frames either side of it: the model's output averaged over the times t - reach .. t + reach
    frame spacings around the output frame t, i.e. a box filter over its outputs, which
    removes the frame-to-frame part of its velocity error. One model, run 2 reach + 1 times."""

    def __init__(self, cfg: LifterConfig, reach: int) -> None:
        super().__init__()
        if cfg.causal or reach < 1:
            raise ValueError("time averaging needs a centred model (a causal one would lag) and reach >= 1")
        self.model = temporal_lifter(cfg)
        self.reach, self.window = reach, cfg.window + 2 * reach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 3 and x.shape[1] == self.window, tuple(x.shape)
        w, n = self.model.cfg.window, 2 * self.reach + 1
        y = self.model(torch.cat([x[:, j:j + w] for j in range(n)], 0))
        return y.reshape(n, x.shape[0], NUM_JOINTS, 3).mean(0)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """features (B, T, D), T >= window -> (B, T - window + 1, 17, 3): output t is forward()
        on frames t .. t + window - 1, the mean of 2 reach + 1 consecutive outputs of the
        model's own sequence form."""
        assert x.ndim == 3 and x.shape[1] >= self.window, tuple(x.shape)
        y = self.model.forward_sequence(x)
        n = x.shape[1] - self.window + 1
        return torch.stack([y[:, j:j + n] for j in range(2 * self.reach + 1)]).mean(0)

    def check_sequence_form(self) -> None:
        self.model.check_sequence_form()


class SequenceForm(nn.Module):
    """A temporal lifter or ensemble run over a stretch of a sequence: forward is its
    forward_sequence, features (B, T, 37) -> joints (B, T - window + 1, 17, 3), mm. This is
    the module the *_sequence stages export (engines.stages), for batch evaluation."""

    def __init__(self, model: TemporalLifter | TemporalEnsemble | TimeAveraged) -> None:
        super().__init__()
        model.check_sequence_form()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_sequence(x)


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Clamp the L2 norm of every Linear layer's incoming weight vectors (rows) to max_norm."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.copy_(torch.renorm(m.weight, p=2, dim=0, maxnorm=max_norm))


def with_flip_tta(ck: dict, model_cls: type, cfg_cls: type) -> dict:
    """A checkpoint dict of `model_cls` (Lifter, or a module built from a config with a
    flip_tta field, like engines.refiner.Refiner) with flip averaging switched on. The weights
    are unchanged; only the mirror buffers are added and model_config says flip_tta=True."""
    from dataclasses import replace

    cfg = replace(cfg_cls(**ck["model_config"]), flip_tta=True)
    model = model_cls(cfg)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if unexpected or any(not k.rsplit(".", 1)[-1].startswith("flip_") for k in missing):
        raise ValueError(f"checkpoint does not fit {model_cls.__name__}: missing {missing}, unexpected {unexpected}")
    return {**ck, "model": model.state_dict(), "model_config": cfg.to_dict()}
