"""Test-only models and fakes for tests/test_engines.py.

- make_lifter_checkpoint: a freshly initialised Lifter in the training checkpoint layout, with
  normalisation buffers at H36M-like scale so outputs are hundreds of mm (parity tolerances
  then mean what they say).
- TINY_IMAGE stage: a small conv net with the generator's I/O shape (a 256x256 RGB crop ->
  coarse depth per joint (B,17) and FBI logits (B,14,3)); it proves the image-input export
  path (static 256x256, dynamic batch) before the real generator exists.
- FakeTensorRT / FakeCudart: stand-ins installed at the import boundary (sys.modules) that
  record what the build code asks of the TensorRT API.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import json
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.checkpoint import contract_metadata
from engines.models import Lifter, LifterConfig
from engines.skeleton import NUM_FBI_BONES as NUM_BONES, NUM_JOINTS
from engines.stages import StageSpec, TensorSpec


def make_lifter_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = LifterConfig()
    model = Lifter(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    model.set_normalization(torch.randn(cfg.in_dim, generator=g) * 0.1, torch.rand(cfg.in_dim, generator=g) + 0.5,
                            torch.randn(NUM_JOINTS * 3, generator=g) * 300, torch.rand(NUM_JOINTS * 3, generator=g) * 200 + 50)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):  # non-trivial running stats
        bn.running_mean.uniform_(-0.2, 0.2, generator=g)
        bn.running_var.uniform_(0.5, 1.5, generator=g)
    torch.save({"model": model.state_dict(), "kind": "lifter", "model_config": cfg.to_dict(),
                "train_config": {}, "contract": contract_metadata()}, path)
    return path


class TinyImageNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 5, stride=4, padding=2), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.depth = nn.Linear(2 * width, NUM_JOINTS)
        self.fbi = nn.Linear(2 * width, NUM_BONES * 3)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(image)
        return self.depth(h) * 1000.0, self.fbi(h).reshape(-1, NUM_BONES, 3)


def _build_tiny(ck: dict) -> nn.Module:
    m = TinyImageNet(**ck["model_config"])
    m.load_state_dict(ck["model"])
    return m.eval()


TINY_IMAGE = StageSpec(
    name="test_tiny_image",
    inputs=(TensorSpec("image", (None, 3, 256, 256)),),
    outputs=(TensorSpec("depth_mm", (None, NUM_JOINTS)), TensorSpec("fbi_logits", (None, NUM_BONES, 3))),
    build=_build_tiny,
    description="test-only conv net with the generator's I/O shapes",
)


def make_image_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    m = TinyImageNet().eval()
    torch.save({"model": m.state_dict(), "kind": TINY_IMAGE.name, "model_config": {"width": 8},
                "contract": contract_metadata()}, path)
    return path


# ---- TensorRT / cuda-python fakes ------------------------------------------------------------

FAKE_MAGIC = b"FAKE-TRT-ENGINE\n"


class FakeTensorRT(types.ModuleType):
    """Just enough of the `tensorrt` module for build_engine_bytes/deserialize. Records calls
    in .log; .fast_fp16 / .parse_ok / .build_ok steer it."""

    def __init__(self, version: str = "10.99.0", strongly_typed_only: bool = False) -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # for importlib.util.find_spec
        self.__version__ = version
        self.log: list[tuple] = []
        self.fast_fp16, self.fast_int8, self.parse_ok, self.build_ok = True, True, True, True
        self.builds = 0
        fake = self

        class Logger:
            WARNING, ERROR = 2, 1

            def __init__(self, level: int) -> None:
                self.level = level

        class BuilderFlag:
            FP16, INT8, TF32 = "FP16", "INT8", "TF32"

        class MemoryPoolType:
            WORKSPACE = "WORKSPACE"

        class NetworkDefinitionCreationFlag:
            EXPLICIT_BATCH = 0

        class Profile:
            def __init__(self) -> None:
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi) -> None:
                self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        class Config:
            def __init__(self) -> None:
                self.flags, self.profiles, self.pools = [], [], {}
                self.int8_calibrator, self.calibration_profile = None, None

            def set_calibration_profile(self, p) -> None:
                self.calibration_profile = p

            def set_memory_pool_limit(self, pool, size) -> None:
                self.pools[pool] = size

            def add_optimization_profile(self, p) -> None:
                self.profiles.append(p)

            def set_flag(self, flag) -> None:
                self.flags.append(flag)

            def clear_flag(self, flag) -> None:
                self.flags.append("-" + flag)

        class Network:
            def __init__(self, flags) -> None:
                self.flags, self.onnx = flags, None

        class OnnxParser:
            def __init__(self, network, logger) -> None:
                self.network, self.num_errors = network, 0

            def parse_from_file(self, path) -> bool:
                fake.log.append(("parse", path))
                self.network.onnx = path
                if not fake.parse_ok:
                    self.num_errors = 1
                return fake.parse_ok

            def get_error(self, i) -> str:
                return "fake parse error: unsupported op"

        class Builder:
            def __init__(self, logger) -> None:
                pass

            @property
            def platform_has_fast_fp16(self) -> bool:
                return fake.fast_fp16

            @property
            def platform_has_fast_int8(self) -> bool:
                return fake.fast_int8

            def create_network(self, flags):
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.builds += 1
                fake.last_config = config
                rec = {"onnx": network.onnx, "flags": config.flags,
                       "profiles": [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles]}
                fake.log.append(("build", rec))
                return FAKE_MAGIC + json.dumps(rec).encode() if fake.build_ok else None

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                fake.log.append(("deserialize", len(data)))
                if not data.startswith(FAKE_MAGIC):
                    return None
                return FakeEngine(json.loads(data[len(FAKE_MAGIC):]))

        if strongly_typed_only:  # TensorRT 11: no precision flags, no calibrators
            BuilderFlag = type("BuilderFlag", (), {"TF32": "TF32"})
        for cls in (IInt8EntropyCalibrator2, Logger, BuilderFlag, MemoryPoolType, NetworkDefinitionCreationFlag, OnnxParser, Builder, Runtime):
            setattr(self, cls.__name__, cls)

    def last_build(self) -> dict:
        return [rec for kind, rec in self.log if kind == "build"][-1]


class FakeEngine:
    """A 'deserialized engine' whose execution context runs the ONNX it was built from on
    ONNX Runtime, reading and writing the raw addresses bound with set_tensor_address: it
    checks that TensorRTBackend binds, shapes and copies tensors correctly."""

    def __init__(self, record: dict) -> None:
        self.record = record

    def create_execution_context(self) -> "FakeContext":
        return FakeContext(self.record["onnx"])


class FakeContext:
    def __init__(self, onnx_path: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.addr: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = int(ptr)
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes[name]

    @staticmethod
    def _view(ptr: int, shape: tuple) -> np.ndarray:
        n = int(np.prod(shape))
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n,)).reshape(shape)

    def execute_async_v3(self, stream_handle: int) -> bool:
        feeds = {i.name: self._view(self.addr[i.name], self.shapes[i.name]).copy() for i in self.session.get_inputs()}
        for o, y in zip(self.session.get_outputs(), self.session.run(None, feeds)):
            self.shapes[o.name] = y.shape
            self._view(self.addr[o.name], y.shape)[...] = y
        return True


class FakeCudart(types.ModuleType):
    """cuda-python runtime stand-in: one device called `gpu_name`; 'device memory' is host
    memory (numpy buffers kept alive here), copies are memmove."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self, gpu_name: str = "Fake GPU 80GB", count: int = 1) -> None:
        super().__init__("cuda.bindings.runtime")
        self.gpu_name, self.count = gpu_name, count
        self.allocs: dict[int, object] = {}
        self.streams = 0

    def cudaMalloc(self, nbytes: int):
        buf = np.zeros(nbytes, np.uint8)
        self.allocs[buf.ctypes.data] = buf
        return (0, buf.ctypes.data)

    def cudaFree(self, ptr: int):
        self.allocs.pop(int(ptr))
        return (0,)

    def cudaStreamCreate(self):
        self.streams += 1
        return (0, 1000 + self.streams)

    def cudaStreamDestroy(self, stream):
        self.streams -= 1
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaMemcpy(self, dst: int, src: int, nbytes: int, kind: int):
        return self.cudaMemcpyAsync(dst, src, nbytes, kind, None)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream):
        dev = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        base = max(a for a in self.allocs if a <= int(dev))  # copies must stay inside an allocation
        assert int(dev) + nbytes <= base + self.allocs[base].nbytes, "copy overruns device buffer"
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return (0,)

    def cudaGetDeviceCount(self):
        return (0, self.count)

    def cudaGetDeviceProperties(self, device: int):
        return (0, types.SimpleNamespace(name=self.gpu_name.encode(), major=9, minor=0))


def _nontrivial_bn(model: nn.Module, g: torch.Generator) -> None:
    for bn in (m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))):
        bn.running_mean.uniform_(-0.2, 0.2, generator=g)
        bn.running_var.uniform_(0.5, 1.5, generator=g)


def make_generator_checkpoint(path: Path, seed: int = 0) -> Path:
    """A freshly initialised engines.generator.Generator (small widths) as a checkpoint."""
    from engines.generator import Generator, GeneratorConfig

    torch.manual_seed(seed)
    cfg = GeneratorConfig(widths=(8, 16, 16, 32), head_hidden=32)
    model = Generator(cfg).eval()
    _nontrivial_bn(model, torch.Generator().manual_seed(seed))
    torch.save({"model": model.state_dict(), "kind": "generator", "model_config": cfg.to_dict(),
                "train_config": {}, "contract": contract_metadata()}, path)
    return path


def make_refiner_checkpoint(path: Path, seed: int = 0, generator: str = "generator") -> Path:
    """A freshly initialised engines.refiner.Refiner at H36M-like output scale, naming its
    generator (a model name or path) as train.train_refiner does."""
    from engines.refiner import Refiner, RefinerConfig

    torch.manual_seed(seed)
    cfg = RefinerConfig(hidden=64)
    model = Refiner(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    model.lifter.set_normalization(torch.zeros(cfg.in_dim), torch.rand(cfg.in_dim, generator=g) * 100 + 0.5,
                                   torch.randn(NUM_JOINTS * 3, generator=g) * 300,
                                   torch.rand(NUM_JOINTS * 3, generator=g) * 200 + 50)
    _nontrivial_bn(model, g)
    torch.save({"model": model.state_dict(), "kind": "refiner", "model_config": cfg.to_dict(),
                "train_config": {}, "contract": contract_metadata(),
                "artifact_meta": {"generator": generator, "input_kind": "mp"}}, path)
    return path
