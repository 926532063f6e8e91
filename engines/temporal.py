"""Temporal lifting contract: a window of 2D frames -> the 3D pose of one frame in it.

The temporal lifters take a window of engines.normalize.features_2d frames spaced SPACING_MS
apart: WINDOW frames, shape (B, WINDOW, 37), for the flattened Martinez network
(engines.models.TemporalLifter, stage "temporal_lifter"), CONV_WINDOW frames for the temporal
convolution (engines.models.TemporalConvLifter, stage "temporal_conv"), ENSEMBLE_WINDOW frames
for an average of such models (engines.models.TemporalEnsemble, stage "temporal_ensemble"). Each
returns the root-relative 3D joints (B, 17, 3), mm, of the window's reference frame: the
centre frame, or the last frame when the model is causal (LifterConfig.causal; a live stream
can only use a causal model, an offline file either). Windows never cross a sequence: at the
ends the first/last frame is repeated (the edge padding VideoPose3D uses).

Why a fixed spacing in milliseconds, not in frames: the 2D sequences come at different rates
(Human3.6M train 25 Hz, S9 validation 10 Hz, cameras 30 Hz), and the motion a window sees must
mean the same thing at every rate. Training takes row strides 2 and 3 of the 25 Hz file (80 and
120 ms) so that the 100 ms of the 10 Hz validation file lies inside what it has seen.
Batch evaluation runs the same models in sequence form (engines.models.SequenceForm, stages
"*_sequence"): a stretch of SEQUENCE_CHUNK + window - 1 frames in, SEQUENCE_CHUNK outputs out,
the temporal convolution computing each layer once per frame rather than once per window;
sequence_chunks cuts the runs into such stretches with the same edge padding.
Numpy only: the realtime app and the evaluation build windows without torch.
"""
from __future__ import annotations

import numpy as np

from engines.errors import UserError
from engines.normalize import LIFT_INPUT_DIM, features_flip

WINDOW = 9             # frames per window of the flattened TemporalLifter (0.8 s at SPACING_MS)
CONV_WINDOW = 27       # frames per window of the TemporalConvLifter (2.6 s; 3**(blocks+1), blocks = 2)
ENSEMBLE_WINDOW = 81   # frames per window of a TemporalEnsemble (8 s): its longest member, a conv over 81
SPACING_MS = 100.0     # time between consecutive frames of a window
SEQUENCE_CHUNK = 128   # output frames per call of a *_sequence stage (batch evaluation)


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


def row_stride(row_ms: float, spacing_ms: float = SPACING_MS) -> int:
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
