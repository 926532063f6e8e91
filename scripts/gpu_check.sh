#!/usr/bin/env bash
# One prepared check for an NVIDIA machine (never run in the CPU-only session that wrote it;
# see docs/engines.md). Usage, from the repository root, with the project installed
# (scripts/setup.sh) and the trained checkpoints in models/:
#     bash scripts/gpu_check.sh [MODEL]          # MODEL defaults to base_gt
# Steps: GPU name -> install tensorrt/cuda-python/polygraphy if missing -> export ONNX and
# build FP32 + FP16 engines -> polygraphy TensorRT-vs-ONNX-Runtime comparison -> pytest -m gpu
# (skips are failures here) -> stage benchmark incl. TensorRT -> the same for the Final model's
# generator and refiner. Results go to $OUT (or
# build/gpu_check). Exit code != 0 on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-base_gt}"
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
step() { echo; echo "=== $* ==="; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT/gpu.txt"

step "TensorRT / cuda-python / polygraphy"
if ! "$PY" -c "import tensorrt, polygraphy; from cuda.bindings import runtime" 2>/dev/null; then
    # tensorrt's libs come from pypi.nvidia.com; WHEELS=dir installs offline from wheels put there.
    # TensorRT 10.x (11.x removed the FP16/INT8 builder flags); its wheels are CUDA 12, so cuda-python 12.
    "$PY" -m pip install ${WHEELS:+--no-index --find-links "$WHEELS"} \
        "tensorrt>=10,<11" "cuda-python>=12,<13" polygraphy \
        || { echo "cannot install TensorRT here (no network? set WHEELS=dir-of-wheels)"; exit 3; }
fi
"$PY" -c "import tensorrt as t; from engines.backends.tensorrt_backend import runtime_env; print('tensorrt', t.__version__, runtime_env())" \
    | tee "$OUT/tensorrt.txt"

step "export ONNX + build engines ($MODEL)"
"$PY" -m realtime.cli export --model "$MODEL" --format onnx --out "$OUT/$MODEL.onnx"
"$PY" -m realtime.cli export --model "$OUT/$MODEL.onnx" --format tensorrt --batch 64 --out "$OUT/${MODEL}_fp32.engine"
FP16=$("$PY" -c "from engines.backends.tensorrt_backend import _trt, weak_typing; print(int(weak_typing(_trt())))")
if [ "$FP16" = 1 ]; then
    "$PY" -m realtime.cli export --model "$OUT/$MODEL.onnx" --format tensorrt --fp16 --batch 64 --out "$OUT/${MODEL}_fp16.engine"
else
    echo "this TensorRT has no FP16 builder flag (>= 11): FP16 engine and FP16 tests skipped"
fi
ls -l "$OUT"

step "polygraphy: TensorRT vs ONNX Runtime on the same ONNX (independent of our code; lifter I/O)"
POLY="$(dirname "$PY")/polygraphy"; [ -x "$POLY" ] || POLY=polygraphy
"$POLY" run "$OUT/$MODEL.onnx" --trt $([ "$FP16" = 1 ] && echo --fp16) --onnxrt \
    --trt-min-shapes features:[1,37] --trt-opt-shapes features:[1,37] --trt-max-shapes features:[64,37] \
    --input-shapes features:[8,37] --atol 1.0 --rtol 0 | tee "$OUT/polygraphy.txt"

step "pytest -m gpu (TensorRT FP32/FP16 parity vs torch, engine cache hit)"
POSESTREAM_REQUIRE_GPU=1 "$PY" -m pytest -m gpu -rA -p no:cacheprovider tests/test_engines.py | tee "$OUT/pytest_gpu.txt"

step "stage benchmark (torch CPU, ONNX Runtime, TensorRT)"
"$PY" -m engines.bench_stages --model "$MODEL" --threads "$(nproc)" --seconds 20 | tee "$OUT/bench.md"

step "Final model (generator + refiner): engines and stage benchmark"
if [ -f models/final.pt ] && [ -f models/generator.pt ]; then
    for m in generator final; do
        "$PY" -m realtime.cli export --model "$m" --format onnx --out "$OUT/$m.onnx"
        "$PY" -m realtime.cli export --model "$OUT/$m.onnx" --format tensorrt --batch 64 --out "$OUT/${m}_fp32.engine"
    done
    "$PY" -m engines.bench_stages --model generator --model final --threads "$(nproc)" --seconds 20 | tee "$OUT/bench_final.md"
fi

step "done: results in $OUT"
