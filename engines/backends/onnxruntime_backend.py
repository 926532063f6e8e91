"""ONNX Runtime backend: a posestream ONNX export on the CPU (or CUDA when that provider is
installed). Needs onnxruntime only (no torch, no onnx).

Input/output names and shapes come from the file's own metadata (engines.artifact), so an
export of any stage runs here without the stage table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engines import artifact
from engines.errors import UserError
from engines.stages import check_inputs

# Preferred first; only those present in this onnxruntime build are used.
PROVIDER_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        """threads: intra-op threads (None = onnxruntime's default, one per core)."""
        import onnxruntime as ort

        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PROVIDER_ORDER if p in available]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise UserError(f"onnxruntime providers {unknown} are not available here (have {available})")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        # Single-stream inference: inter-op parallelism only adds thread hand-offs.
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise UserError(f"cannot load ONNX model {onnx_path}: {exc}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = artifact.decode(dict(props), str(onnx_path))
        artifact.check_contract(self.metadata, str(onnx_path))
        self.inputs = artifact.tensor_specs(self.metadata, "inputs")
        self.outputs = artifact.tensor_specs(self.metadata, "outputs")
        self.providers = self.session.get_providers()
        self._out_names = [t.name for t in self.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = check_inputs(self.inputs, inputs)
        ys = self.session.run(self._out_names, {t.name: x for t, x in zip(self.inputs, xs)})
        return dict(zip(self._out_names, ys))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
