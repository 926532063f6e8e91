"""TensorRT backend: build engines from posestream ONNX exports, run them on an NVIDIA GPU.

Two separate halves:
  build  build_engine_bytes(plan): TensorRT Python API: Builder -> network from OnnxParser ->
         one optimisation profile (batch min..max on axis 0, other dims static) -> FP16 flag
         when requested and `platform_has_fast_fp16` (INT8 likewise, with an entropy
         calibrator over --calib inputs; TF32 off for fp32) -> build_serialized_network. Cached by
         engines.engine_cache (key: ONNX sha256, TensorRT version, GPU, precision, profile).
  infer  TensorRTBackend: deserialize, one execution context, device buffers sized for the
         profile's max batch, allocated once.
Memory and streams use cuda-python (`cuda.bindings.runtime`, older `cuda.cudart`), not torch
CUDA tensors: the realtime app must run on TensorRT without torch installed. Inputs are
copied host->device with cudaMemcpyAsync on one stream, `execute_async_v3`, outputs copied
back, then the stream is synchronised (pageable host memory; pinned buffers would shave the
copies but the tensors here are KBs, except the 256x256 image crops).

`import tensorrt` and the cuda import happen only inside functions: this module imports on
machines without them, and tests replace them at that import boundary.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engines import artifact
from engines.engine_cache import BuildPlan, EngineCache, RuntimeEnv, check_entry, engine_sidecar, write_entry
from engines.errors import UserError
from engines.stages import check_inputs


def _trt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise UserError("TensorRT is not installed (pip install tensorrt cuda-python on an NVIDIA machine)") from None


def _cudart() -> Any:
    for mod in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    raise UserError("cuda-python is not installed (pip install cuda-python); TensorRT inference needs it")


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return (err, *values); raise on err, return the value(s)."""
    err, *vals = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    return vals[0] if len(vals) == 1 else (tuple(vals) if vals else None)


def gpu_present() -> bool:
    """A CUDA device is visible through cuda-python (False when cuda-python is missing)."""
    try:
        cudart = _cudart()
        return int(_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")) > 0
    except (UserError, RuntimeError):
        return False


def runtime_env(device: int = 0) -> RuntimeEnv:
    """TensorRT version and the GPU's name/compute capability: part of every engine's cache key."""
    trt, cudart = _trt(), _cudart()
    props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return RuntimeEnv(tensorrt_version=str(trt.__version__), gpu_name=name.strip("\x00 "),
                      compute_capability=f"{props.major}.{props.minor}")


# ---- build ----------------------------------------------------------------------------------

def weak_typing(trt: Any) -> bool:
    """TensorRT 8-10 pick reduced precision from builder flags (FP16/INT8); 11.x removed them
    (strongly typed networks only), so there `fp32` is the one precision we can build."""
    return hasattr(trt.BuilderFlag, "FP16")


def default_precision() -> str:
    """fp16 where this TensorRT can still be asked for it, else fp32."""
    return "fp16" if weak_typing(_trt()) else "fp32"


def build_engine_bytes(plan: BuildPlan) -> bytes:
    """Build a serialized engine for `plan` (see module docstring). UserError on failure."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it.
    major = int(str(trt.__version__).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so external .onnx.data weights next to the file load.
    if not parser.parse_from_file(str(plan.onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {plan.onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile_shapes().items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    calibrator = None
    if plan.precision != "fp32" and not weak_typing(trt):
        raise UserError(f"TensorRT {trt.__version__} builds strongly typed networks only (no FP16/INT8 builder "
                        f"flags since 11.0): build --fp32, or use tensorrt<11 for --{plan.precision}")
    if plan.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TensorRT allows TF32 matmuls by default on Ampere+ (10-bit mantissa: ~0.5 mm on
        # outputs near 1 m); "fp32" here means real FP32, so parity with torch holds.
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.precision in ("fp16", "int8"):
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            print("posestream: this GPU has no fast FP16; building FP32 kernels", file=sys.stderr)
    if plan.precision == "int8":
        if not builder.platform_has_fast_int8:
            raise UserError("this GPU has no fast INT8; build with --fp16 instead")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, plan)  # kept here: TensorRT holds no Python reference
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {plan.onnx_path} (see its log above)")
    return bytes(serialized)


def _make_calibrator(trt: Any, plan: BuildPlan) -> Any:
    """IInt8EntropyCalibrator2 over the arrays in plan.calib_path (.npz, one per input,
    batches of opt_batch..max_batch rows)."""
    data = np.load(plan.calib_path)
    arrays = check_inputs(plan.inputs, {k: data[k] for k in data.files})
    cudart = _cudart()
    batch = min(plan.max_batch, 32, len(arrays[0]))

    class _Calib(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.pos = 0
            self.dev = [_check(cudart.cudaMalloc(a[:batch].nbytes), "cudaMalloc") for a in arrays]

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.pos + batch > len(arrays[0]):
                return None
            for a, d in zip(arrays, self.dev):
                chunk = np.ascontiguousarray(a[self.pos:self.pos + batch])
                _check(cudart.cudaMemcpy(d, chunk.ctypes.data, chunk.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy")
            self.pos += batch
            return [int(d) for d in self.dev]

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

        def free(self) -> None:
            for d in self.dev:
                cudart.cudaFree(d)
            self.dev = []

    return _Calib()


def deserialize(data: bytes) -> Any:
    """bytes -> ICudaEngine, or None when TensorRT refuses them (corrupt, other version/GPU)."""
    trt = _trt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    return runtime.deserialize_cuda_engine(data)


def load_or_build(plan: BuildPlan, cache: EngineCache | None = None) -> tuple[Any, dict]:
    """The engine for `plan` from the cache, built there first if missing/stale/corrupt."""
    cache = cache or EngineCache()
    engine, side, _built = cache.get_or_build(plan, runtime_env(), build_engine_bytes, deserialize)
    return engine, side


def build_engine_file(plan: BuildPlan, out: str | Path) -> Path:
    """`posestream export --format tensorrt`: build and write OUT.engine + OUT.engine.json."""
    out = Path(out)
    data = build_engine_bytes(plan)
    write_entry(out, sidecar_path(out), data, engine_sidecar(plan, runtime_env(), data))
    return out


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def load_engine_file(path: Path) -> tuple[Any, dict]:
    """A user-named .engine (+ .engine.json): integrity, then this machine's TensorRT/GPU."""
    try:
        data, side = check_entry(path, sidecar_path(path), None)
    except ValueError as exc:
        raise UserError(f"cannot use engine {path}: {exc}") from None
    env = runtime_env()
    key = side["key"]
    for field, have in (("tensorrt_version", env.tensorrt_version), ("gpu_name", env.gpu_name),
                        ("compute_capability", env.compute_capability)):
        if key.get(field) != have:
            raise UserError(f"engine {path} was built for {field} {key.get(field)!r}, this machine has "
                            f"{have!r}; rebuild it (posestream export --format tensorrt)")
    engine = deserialize(data)
    if engine is None:
        raise UserError(f"TensorRT could not deserialize {path}; rebuild it")
    return engine, side


def open_tensorrt(files: dict[str, Path], precision: str | None = None, max_batch: int = 64,
                  engine_cache_dir: str | Path | None = None, onnx_cache_dir: str | Path | None = None,
                  stage: str | None = None, **_: Any) -> "TensorRTBackend":
    """engines.backends.open_backend's loader: a .engine as given, else the cached engine for
    the .onnx (or the .pt's ONNX export)."""
    if ".engine" in files:
        engine, side = load_engine_file(files[".engine"])
        return TensorRTBackend(engine, side)
    if ".pt" in files:
        from engines.onnx_export import onnx_for_checkpoint

        onnx_path = onnx_for_checkpoint(files[".pt"], onnx_cache_dir, stage=stage)
    else:
        onnx_path = files[".onnx"]
    plan = BuildPlan.for_onnx(onnx_path, precision=precision or default_precision(), max_batch=max_batch)
    engine, side = load_or_build(plan, EngineCache(engine_cache_dir))
    return TensorRTBackend(engine, side)


# ---- infer ----------------------------------------------------------------------------------

class TensorRTBackend:
    """One engine, one execution context, one stream: call `run` from one thread at a time
    (the realtime pipeline runs each stage on its own worker thread)."""

    name = "tensorrt"

    def __init__(self, engine: Any, sidecar: dict) -> None:
        self.engine = engine
        self.metadata = dict(sidecar["onnx_metadata"])
        self.metadata["engine"] = {k: v for k, v in sidecar.items() if k != "onnx_metadata"}
        artifact.check_contract(self.metadata, "TensorRT engine")
        self.inputs = artifact.tensor_specs(self.metadata, "inputs")
        self.outputs = artifact.tensor_specs(self.metadata, "outputs")
        self.max_batch = int(sidecar["max_batch"])
        self._cudart = cudart = _cudart()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise UserError("TensorRT could not create an execution context (GPU memory?)")
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._dev: dict[str, Any] = {}
        for t in (*self.inputs, *self.outputs):
            nbytes = self.max_batch * int(np.prod(t.shape[1:])) * 4
            self._dev[t.name] = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self.context.set_tensor_address(t.name, int(self._dev[t.name]))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, h2d = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        xs = check_inputs(self.inputs, inputs, max_batch=self.max_batch)
        for t, x in zip(self.inputs, xs):
            self.context.set_input_shape(t.name, x.shape)
            _check(cudart.cudaMemcpyAsync(self._dev[t.name], x.ctypes.data, x.nbytes, h2d, self.stream), "H2D copy")
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out = {}
        for t in self.outputs:
            y = np.empty(tuple(self.context.get_tensor_shape(t.name)), np.float32)
            _check(cudart.cudaMemcpyAsync(y.ctypes.data, self._dev[t.name], y.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "D2H copy")
            out[t.name] = y
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return out

    def close(self) -> None:
        if getattr(self, "_dev", None):
            for ptr in self._dev.values():
                self._cudart.cudaFree(ptr)
            self._dev = {}
            self._cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = None

