"""The stage table: what each exportable model stage takes and returns.

A checkpoint's `kind` ("lifter", "generator", "refiner") names its stage. One
`StageSpec` entry per stage says how to build the torch module from a checkpoint and the
named inputs/outputs every runtime must honour. Export, the backends and the benchmark read
only this table, so adding a stage is adding one entry (`register_stage`).

Shapes use None for the dynamic batch axis; every other axis is static (image stages take a
fixed 256x256 crop). All tensors are float32.

A temporal stage names a second stage, its `sequence` form, which runs the same checkpoint over
a stretch of a sequence (engines.models.SequenceForm) for batch evaluation; backends open it
with open_backend(..., stage=NAME) (resolve_stage).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

from engines.errors import UserError
from engines.normalize import CUE_FRAME_DIM, LIFT_INPUT_DIM
from engines.skeleton import NUM_FBI_BONES, NUM_JOINTS
from engines.temporal import (AVERAGED_MEMBER, AVERAGED_REACH, AVERAGED_STAGE, CONV_WINDOWS, ENSEMBLE_WINDOW,
                              SEQUENCE_CHUNK, conv_stage)
from engines.temporal import WINDOW as TEMPORAL_WINDOW


@dataclass(frozen=True)
class TensorSpec:
    """A named float32 tensor; shape[0] is None (dynamic batch), the rest static."""

    name: str
    shape: tuple[int | None, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": ["batch" if d is None else d for d in self.shape], "dtype": "float32"}


@dataclass(frozen=True)
class StageSpec:
    """One exportable stage. `build(ck)` returns the eval-mode torch module for a loaded
    checkpoint dict; its forward takes the inputs positionally in `inputs` order and returns
    a tensor (one output) or a tuple in `outputs` order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    build: Callable[[dict], Any]
    description: str = ""
    # (batch, rng) -> in-distribution inputs; None = standard normal. Parity figures are
    # only meaningful on realistic inputs: random lifter features hit the near-zero input
    # std of the pelvis entries and give outputs of 1e8 mm.
    example: Callable[[int, np.random.Generator], dict[str, np.ndarray]] | None = None
    sequence: str | None = None  # the stage running this stage's checkpoints over a stretch of frames

    def example_inputs(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Fixed pseudo-random inputs (for export tracing, parity tests and benchmarks)."""
        rng = np.random.default_rng(seed)
        if self.example is not None:
            return self.example(batch, rng)
        return {t.name: rng.standard_normal((batch, *t.shape[1:])).astype(np.float32) for t in self.inputs}


def _build_lifter(ck: dict) -> Any:
    from engines.models import Lifter, LifterConfig

    model = Lifter(LifterConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    return model.eval()


# A standing person seen from the front, metres, image axes (x right, y down), H36M joint order.
_STANDING_2D = np.array([
    (0, 0), (-0.13, 0), (-0.14, 0.45), (-0.15, 0.88), (0.13, 0), (0.14, 0.45), (0.15, 0.88),
    (0, -0.23), (0, -0.48), (0, -0.58), (0, -0.68),
    (0.17, -0.45), (0.3, -0.2), (0.35, 0.05), (-0.17, -0.45), (-0.3, -0.2), (-0.35, 0.05)])


def _lifter_example(batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible 2D poses (jittered standing template, 150-400 px/m, anywhere near the centre
    of a 1000x1000 image, f = 1000 px) through engines.normalize.features_2d."""
    from engines.normalize import features_2d

    pose = _STANDING_2D[None] + rng.normal(0, 0.05, (batch, NUM_JOINTS, 2))
    uv = pose * rng.uniform(150, 400, (batch, 1, 1)) + rng.uniform(300, 700, (batch, 1, 2))
    return {"features": features_2d(uv, np.array([1000.0, 1000.0]), np.array([500.0, 500.0]))}


def _temporal_builder(window: int, conv: bool, dim: int = LIFT_INPUT_DIM) -> Callable[[dict], Any]:
    """The build function of a temporal stage: its input shape is static, like the generator's
    crop, so a checkpoint with another window (or frame width) is refused."""

    def build(ck: dict) -> Any:
        from engines.models import LifterConfig, temporal_lifter

        cfg = LifterConfig(**{**ck["model_config"], "frame_cues": tuple(ck["model_config"].get("frame_cues", ()))})
        if cfg.window != window or cfg.conv != conv or cfg.frame_dim != dim:
            raise UserError(f"temporal lifter has a {cfg.window}-frame window{' (convolution)' * cfg.conv} of "
                            f"{cfg.frame_dim} inputs; this stage runs {window}-frame "
                            f"{'convolutions' if conv else 'ones'} of {dim}")
        model = temporal_lifter(cfg)
        model.load_state_dict(ck["model"])
        return model.eval()

    return build


def _build_temporal_ensemble(ck: dict) -> Any:
    from engines.models import LifterConfig, TemporalEnsemble

    cfg = ck["model_config"]
    if cfg["window"] != ENSEMBLE_WINDOW:
        raise UserError(f"temporal ensemble has a {cfg['window']}-frame window; this stage runs {ENSEMBLE_WINDOW}")
    model = TemporalEnsemble([LifterConfig(**m) for m in cfg["members"]], cfg["window"])
    model.load_state_dict(ck["model"])
    return model.eval()


def _build_time_averaged(ck: dict) -> Any:
    from engines.models import LifterConfig, TimeAveraged

    cfg = ck["model_config"]
    member = LifterConfig(**cfg["member"])
    if (member.window, member.conv, cfg["reach"]) != (AVERAGED_MEMBER, True, AVERAGED_REACH):
        raise UserError(f"time-averaged model of a {member.window}-frame model over +-{cfg['reach']} frames; "
                        f"this stage runs a {AVERAGED_MEMBER}-frame convolution over +-{AVERAGED_REACH}")
    model = TimeAveraged(member, cfg["reach"])
    model.load_state_dict(ck["model"])
    return model.eval()


def _temporal_example(batch: int, rng: np.random.Generator, window: int = TEMPORAL_WINDOW,
                      cues: bool = False) -> dict[str, np.ndarray]:
    """A lifter example pose drifting a little from frame to frame (with cues: small random
    depths and uniform FBI probabilities)."""
    from engines.normalize import features_2d, features_2d_cues

    pose = _STANDING_2D[None] + rng.normal(0, 0.05, (batch, NUM_JOINTS, 2))
    drift = np.cumsum(rng.normal(0, 0.01, (batch, window, NUM_JOINTS, 2)), axis=1)
    uv = (pose[:, None] + drift) * rng.uniform(150, 400, (batch, 1, 1, 1)) + rng.uniform(300, 700, (batch, 1, 1, 2))
    f, c = np.array([1000.0, 1000.0]), np.array([500.0, 500.0])
    if not cues:
        return {"features": features_2d(uv, f, c)}
    depth = rng.normal(0, 100, (batch, window, NUM_JOINTS, 3))
    return {"features": features_2d_cues(uv, f, c, depth, depth, np.full((batch, window, 14, 3), 1 / 3))}


def _build_generator(ck: dict) -> Any:
    from engines.generator import Generator, GeneratorConfig

    cfg = dict(ck["model_config"])
    cfg["widths"] = tuple(cfg["widths"])
    model = Generator(GeneratorConfig(**cfg))
    model.load_state_dict(ck["model"])
    return model.eval()


def _build_refiner(ck: dict) -> Any:
    from engines.refiner import Refiner, RefinerConfig

    model = Refiner(RefinerConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    return model.eval()


def _generator_example(batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A grey crop with noise and the standing template's joints filling it."""
    from engines.crop import CROP_SIZE

    pose = _STANDING_2D[None] + rng.normal(0, 0.03, (batch, NUM_JOINTS, 2))
    joints = (pose * 120 + CROP_SIZE / 2).astype(np.float32)
    image = np.clip(0.5 + 0.2 * rng.standard_normal((batch, 3, CROP_SIZE, CROP_SIZE)), 0, 1).astype(np.float32)
    return {"image": image, "joints_crop": joints}


def _refiner_example(batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Lifter example features, the template as coarse 3D (mm), uniform-ish FBI."""
    feats = _lifter_example(batch, rng)["features"]
    coarse = np.concatenate([_STANDING_2D * 1000, np.zeros((NUM_JOINTS, 1))], 1)[None]
    coarse = (coarse + rng.normal(0, 30, (batch, NUM_JOINTS, 3))).astype(np.float32)
    coarse -= coarse[:, :1]
    logits = rng.normal(0, 1, (batch, NUM_FBI_BONES, 3))
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"features": feats, "coarse_mm": coarse, "fbi_prob": prob.astype(np.float32)}


def _sequence_builder(build: Callable[[dict], Any]) -> Callable[[dict], Any]:
    def build_sequence(ck: dict) -> Any:
        from engines.models import SequenceForm

        try:
            return SequenceForm(build(ck)).eval()
        except ValueError as exc:
            raise UserError(f"{ck.get('kind')} checkpoint: {exc}") from None

    return build_sequence


def _with_sequence_form(spec: StageSpec, window: int) -> tuple[StageSpec, StageSpec]:
    """(spec naming its sequence stage, that stage): SEQUENCE_CHUNK + window - 1 frames ->
    SEQUENCE_CHUNK outputs (engines.temporal.sequence_chunks builds the input)."""
    from dataclasses import replace

    length = SEQUENCE_CHUNK + window - 1
    dim = spec.inputs[0].shape[2]
    seq = StageSpec(
        name=f"{spec.name}_sequence",
        inputs=(TensorSpec("features", (None, length, dim)),),
        outputs=(TensorSpec("joints_mm", (None, SEQUENCE_CHUNK, NUM_JOINTS, 3)),),
        build=_sequence_builder(spec.build),
        example=partial(_temporal_example, window=length, cues=dim == CUE_FRAME_DIM),
        description=f"{spec.name} over {length} consecutive frames -> joints (mm) of the {SEQUENCE_CHUNK} "
                    f"frames with whole windows",
    )
    return replace(spec, sequence=seq.name), seq


_TEMPORAL_STAGES = [_with_sequence_form(spec, window) for spec, window in (
    (StageSpec(
        name="temporal_lifter",
        inputs=(TensorSpec("features", (None, TEMPORAL_WINDOW, LIFT_INPUT_DIM)),),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_temporal_builder(TEMPORAL_WINDOW, conv=False),
        example=_temporal_example,
        description="engines.temporal: a window of features_2d frames -> root-relative joints (mm) of one frame",
    ), TEMPORAL_WINDOW),
    *((StageSpec(
        name=conv_stage(window),
        inputs=(TensorSpec("features", (None, window, LIFT_INPUT_DIM)),),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_temporal_builder(window, conv=True),
        example=partial(_temporal_example, window=window),
        description=f"engines.temporal: the temporal convolution over {window} frames -> joints (mm) of one frame",
    ), window) for window in CONV_WINDOWS),
    *((StageSpec(
        name=conv_stage(window, cues=True),
        inputs=(TensorSpec("features", (None, window, CUE_FRAME_DIM)),),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_temporal_builder(window, conv=True, dim=CUE_FRAME_DIM),
        example=partial(_temporal_example, window=window, cues=True),
        description=f"engines.temporal: the temporal convolution over {window} features_2d_cues frames "
                    f"(2D + image cues)",
    ), window) for window in CONV_WINDOWS),
    (StageSpec(
        name="temporal_ensemble",
        inputs=(TensorSpec("features", (None, ENSEMBLE_WINDOW, LIFT_INPUT_DIM)),),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_build_temporal_ensemble,
        example=partial(_temporal_example, window=ENSEMBLE_WINDOW),
        description="engines.temporal: the mean of temporal lifters, each on the centre of one window",
    ), ENSEMBLE_WINDOW),
    (StageSpec(
        name=AVERAGED_STAGE,
        inputs=(TensorSpec("features", (None, AVERAGED_MEMBER + 2 * AVERAGED_REACH, LIFT_INPUT_DIM)),),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_build_time_averaged,
        example=partial(_temporal_example, window=AVERAGED_MEMBER + 2 * AVERAGED_REACH),
        description=f"engines.models.TimeAveraged: a centred {AVERAGED_MEMBER}-frame temporal convolution's "
                    f"outputs averaged over the {2 * AVERAGED_REACH + 1} windows around the output frame",
    ), AVERAGED_MEMBER + 2 * AVERAGED_REACH),
)]

STAGES: dict[str, StageSpec] = {
    "lifter": StageSpec(
        name="lifter",
        inputs=(TensorSpec("features", (None, LIFT_INPUT_DIM)),),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_build_lifter,
        example=_lifter_example,
        description="Martinez lifter: engines.normalize.features_2d -> root-relative joints (mm)",
    ),
    **{spec.name: spec for pair in _TEMPORAL_STAGES for spec in pair},
    "generator": StageSpec(
        name="generator",
        inputs=(TensorSpec("image", (None, 3, 256, 256)), TensorSpec("joints_crop", (None, NUM_JOINTS, 2))),
        outputs=(TensorSpec("coarse_mm", (None, NUM_JOINTS, 3)), TensorSpec("fbi_prob", (None, NUM_FBI_BONES, 3))),
        build=_build_generator,
        example=_generator_example,
        description="engines.generator: 256 crop (RGB 0-1) + 2D joints (crop px) -> coarse 3D (mm), FBI",
    ),
    "refiner": StageSpec(
        name="refiner",
        inputs=(TensorSpec("features", (None, LIFT_INPUT_DIM)), TensorSpec("coarse_mm", (None, NUM_JOINTS, 3)),
                TensorSpec("fbi_prob", (None, NUM_FBI_BONES, 3))),
        outputs=(TensorSpec("joints_mm", (None, NUM_JOINTS, 3)),),
        build=_build_refiner,
        example=_refiner_example,
        description="engines.refiner: features_2d + coarse 3D + FBI -> root-relative joints (mm)",
    ),
}


def register_stage(spec: StageSpec) -> None:
    """Add (or replace) a stage; later stages call this at import of their model module."""
    STAGES[spec.name] = spec


def stage_for(kind: str | None) -> StageSpec:
    if kind not in STAGES:
        raise UserError(f"unknown model stage {kind!r}: known stages are {', '.join(sorted(STAGES))}")
    return STAGES[kind]


def resolve_stage(kind: str | None, stage: str | None = None) -> StageSpec:
    """The stage to run a checkpoint of `kind` as: its own, or (stage given) that stage when it
    is the kind's sequence form; UserError otherwise."""
    spec = stage_for(kind)
    if stage is None or stage == spec.name:
        return spec
    if stage != spec.sequence:
        raise UserError(f"a {spec.name} checkpoint runs as stage {spec.name}"
                        f"{' or ' + spec.sequence if spec.sequence else ''}, not {stage}")
    return stage_for(stage)


def check_inputs(specs: tuple[TensorSpec, ...], inputs: dict[str, np.ndarray],
                 max_batch: int | None = None) -> list[np.ndarray]:
    """Validate named inputs against the stage's specs; return contiguous float32 arrays in
    spec order. float64 is cast (features_2d-style callers); any other dtype, a missing or
    extra name, a wrong rank/static dim or mismatched batch sizes is a UserError."""
    if not isinstance(inputs, dict):
        raise UserError(f"inputs must be a dict of name -> array, got {type(inputs).__name__}")
    names = [s.name for s in specs]
    if set(inputs) != set(names):
        raise UserError(f"expected inputs {names}, got {sorted(inputs)}")
    out, batch = [], None
    for s in specs:
        a = inputs[s.name]
        if not isinstance(a, np.ndarray):
            raise UserError(f"input {s.name!r} must be a numpy array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise UserError(f"input {s.name!r} must be float32, got {a.dtype}")
        want = tuple("B" if d is None else d for d in s.shape)
        if a.ndim != len(s.shape) or any(d is not None and d != g for d, g in zip(s.shape, a.shape)):
            raise UserError(f"input {s.name!r} must have shape {want}, got {tuple(a.shape)}")
        if a.shape[0] < 1:
            raise UserError(f"input {s.name!r} has an empty batch")
        if batch is not None and a.shape[0] != batch:
            raise UserError(f"inputs disagree on batch size ({batch} vs {a.shape[0]})")
        batch = a.shape[0]
        out.append(np.ascontiguousarray(a, np.float32))
    if max_batch is not None and batch > max_batch:
        raise UserError(f"batch {batch} exceeds this engine's maximum batch {max_batch}")
    return out
