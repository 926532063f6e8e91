"""Switch flip averaging on in a lifter or refiner checkpoint (engines.models docstring).

    python scripts/flip_tta.py models/base_gt.pt [--out models/base_gt.pt]

The weights are not touched; the mirror buffers are added and model_config.flip_tta is set,
so every runtime (torch, the ONNX export, TensorRT) averages the input and its mirror image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch

    from engines.models import Lifter, LifterConfig, with_flip_tta
    from engines.refiner import Refiner, RefinerConfig

    classes = {"lifter": (Lifter, LifterConfig), "refiner": (Refiner, RefinerConfig)}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", default=None, help="default: overwrite the input")
    a = ap.parse_args(argv)
    ck = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    if ck.get("kind") not in classes:
        print(f"error: {a.checkpoint} is a {ck.get('kind')!r} checkpoint; flip averaging is for {sorted(classes)}")
        return 2
    if ck["model_config"].get("flip_tta"):
        print(f"{a.checkpoint}: flip averaging already on")
        return 0
    torch.save(with_flip_tta(ck, *classes[ck["kind"]]), a.out or a.checkpoint)
    print(f"{a.out or a.checkpoint}: flip averaging on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
