"""Temporal lifting contract: a window of 2D frames -> the 3D pose of one frame in it.

The temporal lifters take a window of per-frame inputs spaced a fixed time apart: `window`
frames `spacing_ms` apart, shape (B, window, 37), computed per frame by the function the model
names (`frame_input`, today engines.normalize.features_2d of the 17-joint 2D). WindowSpec holds
that contract; every temporal checkpoint records it in its model config (LifterConfig.window,
causal, spacing_ms) and its exports carry it in their metadata (WindowSpec.metadata), which is
what a runtime reads (WindowSpec.from_metadata; checkpoints made before spacing_ms was recorded
were trained at DEFAULT_SPACING_MS). Models: the flattened Martinez network
(engines.models.TemporalLifter, stage "temporal_lifter", WINDOW frames), the temporal
convolution (engines.models.TemporalConvLifter, stages "temporal_conv" over CONV_WINDOW frames
and "temporal_conv81" over 81, and their "*_cues" twins whose frames carry image cues), an average of such models (engines.models.TemporalEnsemble,
stage "temporal_ensemble", ENSEMBLE_WINDOW frames). Each returns the root-relative 3D joints
(B, 17, 3), mm, of the window's reference frame: the centre frame, or the last frame when the
model is causal (a live stream can only use a causal model, an offline file either). Windows
never cross a sequence: at the ends the first/last frame is repeated (the edge padding
VideoPose3D uses).

Why a fixed spacing in milliseconds, not in frames: the 2D comes at different rates (Human3.6M
train 25 Hz, S9 validation 10 Hz, cameras 25-60 fps, with dropped frames), and the motion a
window sees must mean the same thing at every rate. Rows of a file whose rate is a whole multiple
of the spacing are windowed by row strides (row_stride, windowed_features); any other stream is
resampled by timestamp (timed_windows: linear interpolation between the two nearest frames,
clamped to the first/last frame), which is also what a live history buffer does.
Batch evaluation runs the same models in sequence form (engines.models.SequenceForm, stages
"*_sequence"): a stretch of SEQUENCE_CHUNK + window - 1 frames in, SEQUENCE_CHUNK outputs out,
the temporal convolution computing each layer once per frame rather than once per window;
sequence_chunks cuts the runs into such stretches with the same edge padding.
Numpy only: the realtime app and the evaluation build windows without torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from engines.errors import UserError
from engines.normalize import LIFT_INPUT_DIM, features_flip

WINDOW = 9             # frames per window of the flattened TemporalLifter stage
CONV_WINDOW = 27       # frames per window of the TemporalConvLifter stage temporal_conv (3**(blocks+1), blocks = 2)
CONV_WINDOWS = (27, 81)  # the temporal convolutions with a stage: temporal_conv (27), temporal_conv81
ENSEMBLE_WINDOW = 81   # frames per window of a TemporalEnsemble: its longest member, a conv over 81
AVERAGED_STAGE, AVERAGED_MEMBER, AVERAGED_REACH = "temporal_conv81_avg3", 81, 1   # a TimeAveraged conv over 81
DEFAULT_SPACING_MS = 100.0   # spacing of checkpoints that predate LifterConfig.spacing_ms
FRAME_INPUT = "engines.normalize.features_2d"   # the per-frame input of every model so far
SEQUENCE_CHUNK = 128   # output frames per call of a *_sequence stage (batch evaluation)


def conv_stage(window: int, cues: bool = False) -> str:
    """Stage name of a temporal convolution over `window` frames (CONV_WINDOWS): temporal_conv
    (27), temporal_conv81; with per-frame image cues (engines.normalize.features_2d_cues) the
    same name + "_cues"."""
    if window not in CONV_WINDOWS:
        raise UserError(f"no temporal-convolution stage runs {window}-frame windows (stages run {CONV_WINDOWS})")
    return ("temporal_conv" if window == CONV_WINDOW else f"temporal_conv{window}") + ("_cues" if cues else "")


@dataclass(frozen=True)
class WindowSpec:
    """What a runtime needs to feed a temporal model: `window` frames `spacing_ms` apart, the
    reference (output) frame last when `causal`, else in the centre; each frame's input is
    `frame_input` (a dotted engines function, frame_input_function) of that frame's 2D joints
    (17, 2) px and camera f, c (2,) px, with the per-frame cues named in `frame_cues` as
    keyword arguments (none for features_2d; engines.normalize.features_2d_cues names them)."""

    window: int
    causal: bool
    spacing_ms: float
    frame_input: str = FRAME_INPUT
    frame_cues: tuple[str, ...] = ()   # keyword arrays frame_input takes besides (uv, f, c)

    def __post_init__(self) -> None:
        window_offsets(self.window, self.causal)   # refuses an even centred window
        if not self.spacing_ms > 0:
            raise ValueError(f"spacing_ms must be positive, got {self.spacing_ms}")

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "WindowSpec":
        """From a checkpoint's model config or an artifact's metadata (window, causal and, when
        recorded, spacing_ms and frame_input). UserError when it has no window."""
        if "window" not in meta or "causal" not in meta:
            raise UserError(f"{meta.get('source_file', 'model')}: no temporal window in its metadata")
        return cls(int(meta["window"]), bool(meta["causal"]), float(meta.get("spacing_ms", DEFAULT_SPACING_MS)),
                   str(meta.get("frame_input", FRAME_INPUT)), tuple(meta.get("frame_cues", ())))

    def metadata(self) -> dict[str, Any]:
        """The artifact metadata keys (engines.export writes them into the ONNX)."""
        return {"window": self.window, "causal": self.causal, "spacing_ms": self.spacing_ms,
                "frame_input": self.frame_input, "frame_cues": list(self.frame_cues)}

    def offsets_ms(self) -> np.ndarray:
        """(window,) float64 times of the window's frames relative to its reference frame, ms."""
        return window_offsets(self.window, self.causal) * self.spacing_ms

    @property
    def history_ms(self) -> float:
        """How far back the window reaches from its reference frame, ms."""
        return float(-self.offsets_ms()[0])

    @property
    def lookahead_ms(self) -> float:
        """How far ahead of its reference frame the window reaches, ms (0 when causal)."""
        return float(self.offsets_ms()[-1])


def window_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The complete window keys (WindowSpec.metadata) of a temporal model's metadata, filling
    what older checkpoints did not record (spacing_ms, frame_input); {} for a model without
    a window (single-frame stages)."""
    return WindowSpec.from_metadata(meta).metadata() if "window" in meta and "causal" in meta else {}


def frame_input_function(name: str) -> Callable[..., np.ndarray]:
    """The engines function a WindowSpec names as its per-frame input (e.g.
    engines.normalize.features_2d); UserError for anything outside engines or not callable."""
    module, _, attr = name.rpartition(".")
    if not module.startswith("engines.") or not attr:
        raise UserError(f"model input function {name!r} is not an engines function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise UserError(f"model input function {name!r} does not exist in this version of posestream") from None
    if not callable(fn):
        raise UserError(f"model input function {name!r} is not callable")
    return fn


def window_offsets(window: int = WINDOW, causal: bool = False) -> np.ndarray:
    """(window,) int64 frame offsets of a window relative to its reference frame:
    -(W-1)..0 when causal, -(W-1)/2..(W-1)/2 otherwise (W odd)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if causal:
        return np.arange(-(window - 1), 1, dtype=np.int64)
    if window % 2 == 0:
        raise ValueError(f"a centred window needs an odd length, got {window}")
    return np.arange(-(window // 2), window // 2 + 1, dtype=np.int64)


def group_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """keys (M,): one value per sample, equal within a contiguous run of one sequence (e.g.
    sequence * 4 + camera). Returns (first, last) (M,) int64: the sample indices where each
    sample's run starts and ends."""
    keys = np.asarray(keys)
    assert keys.ndim == 1, keys.shape
    m = len(keys)
    starts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1].astype(np.int64)
    ends = np.r_[starts[1:], m].astype(np.int64) - 1
    run = np.searchsorted(starts, np.arange(m), side="right") - 1
    return starts[run], ends[run]


def window_indices(first: np.ndarray, last: np.ndarray, centers: np.ndarray, offsets: np.ndarray,
                   stride: int | np.ndarray = 1) -> np.ndarray:
    """Sample indices of each window: (len(centers), len(offsets)) int64, clamped to the
    centre's run [first, last] (edge padding). stride: rows per window step, an int or one per
    centre (training mixes strides to cover a range of frame spacings)."""
    centers = np.asarray(centers, np.int64)
    step = np.asarray(stride, np.int64).reshape(-1, 1) if np.ndim(stride) else np.int64(stride)
    idx = centers[:, None] + offsets[None, :] * step
    return np.clip(idx, first[centers][:, None], last[centers][:, None])


def row_stride(row_ms: float, spacing_ms: float) -> int:
    """Rows per window step for rows `row_ms` apart; UserError when no whole stride comes
    within 25 % of the model's spacing (the model would see motion at the wrong speed)."""
    if not row_ms > 0:
        raise UserError(f"row spacing must be positive, got {row_ms} ms")
    stride = max(1, int(round(spacing_ms / row_ms)))
    if abs(stride * row_ms - spacing_ms) > 0.25 * spacing_ms:
        raise UserError(f"rows {row_ms:g} ms apart cannot be windowed at {spacing_ms:g} ms "
                        f"(nearest stride {stride} gives {stride * row_ms:g} ms)")
    return stride


def window_flip(window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """engines.normalize.features_flip applied to every frame of a flattened (window, 37)
    input: index (window*37,) int64, sign (window*37,) float32."""
    index, sign = features_flip()
    frames = np.arange(window)[:, None] * LIFT_INPUT_DIM
    return (frames + index[None]).ravel().astype(np.int64), np.tile(sign, window)


def windowed_features(features: np.ndarray, keys: np.ndarray, stride: int = 1, window: int = WINDOW,
                      causal: bool = False) -> np.ndarray:
    """Per-frame features (M, 37) in sequence order, run keys (M,) -> (M, window, 37) float32:
    the window of every sample (see window_indices)."""
    assert features.ndim == 2 and features.shape[1] == LIFT_INPUT_DIM, features.shape
    assert keys.shape == (len(features),), (keys.shape, features.shape)
    first, last = group_bounds(keys)
    idx = window_indices(first, last, np.arange(len(features)), window_offsets(window, causal), stride)
    return np.ascontiguousarray(features[idx], np.float32)


def sequence_chunks(features: np.ndarray, keys: np.ndarray, stride: int, window: int, causal: bool,
                    chunk: int = SEQUENCE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The input of a sequence stage for every sample: per-frame features (M, 37) in sequence
    order and run keys (M,) as for windowed_features -> (chunks (N, chunk + window - 1, 37)
    float32, slot (M,) int64). Output row slot[i] of the stage's outputs, flattened to
    (N * chunk, ...), is what the model gives on windowed_features(...)[i].

    Each run is split into its `stride` interleaved phases (rows stride apart, the frames one
    window step apart); each phase is padded with the run's first/last row, exactly where
    window_indices clamps, and cut into stretches whose outputs tile it."""
    assert features.ndim == 2 and features.shape[1] == LIFT_INPUT_DIM, features.shape
    assert keys.shape == (len(features),), (keys.shape, features.shape)
    before = -int(window_offsets(window, causal)[0])          # frames a window reaches back
    first, last = group_bounds(keys)
    rows, slot, made = [], np.empty(len(features), np.int64), 0
    span = np.arange(chunk + window - 1)
    for a in np.unique(first):
        b = int(last[a])
        for phase in range(min(stride, b - a + 1)):
            frames = np.arange(a + phase, b + 1, stride)
            count = -(-len(frames) // chunk)
            padded = np.clip(frames[0] + stride * (np.arange(count * chunk + window - 1) - before), a, b)
            rows.append(padded[np.arange(count)[:, None] * chunk + span[None]])
            slot[frames] = made + np.arange(len(frames))
            made += count * chunk
    return np.ascontiguousarray(features[np.concatenate(rows)], np.float32), slot


def timed_windows(times_ms: np.ndarray, frames: np.ndarray, ref_ms: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Windows resampled by timestamp: the frames of one sequence at increasing times_ms (T,)
    (any rate, gaps allowed), per-frame inputs `frames` (T, ...) -> (M, window, ...) float32,
    the window of each reference time ref_ms (M,): its frames at ref + spec.offsets_ms(), each
    linearly interpolated between the two frames around it and clamped to the first/last frame
    outside [times_ms[0], times_ms[-1]] (edge padding). A causal window at a frame's own time
    uses no later frame."""
    t = np.asarray(times_ms, np.float64)
    frames = np.asarray(frames)
    if t.ndim != 1 or len(t) != len(frames) or len(t) == 0:
        raise ValueError(f"need (T,) times and (T, ...) frames with T >= 1, got {t.shape} and {frames.shape}")
    if len(t) > 1 and not (np.diff(t) > 0).all():
        raise ValueError("frame times must be strictly increasing")
    q = np.asarray(ref_ms, np.float64).reshape(-1, 1) + spec.offsets_ms()[None]      # (M, window)
    q = np.clip(q, t[0], t[-1])
    hi = np.clip(np.searchsorted(t, q, side="left"), 0, len(t) - 1)
    lo = np.clip(hi - 1, 0, len(t) - 1)
    span = t[hi] - t[lo]
    w = np.where(span > 0, (q - t[lo]) / np.where(span > 0, span, 1.0), 1.0)
    w = w.reshape(w.shape + (1,) * (frames.ndim - 1))
    flat = frames.astype(np.float64)
    return ((1.0 - w) * flat[lo] + w * flat[hi]).astype(np.float32)
