"""Ship a trained refiner and its generator as shipped models (models/NAME.pt + models/GEN.pt).

    python scripts/ship_final.py --refiner runs/final_mp_ft/best.pt --name final \
        --generator runs/generator_adv/best.pt --generator-name generator

The refiner checkpoint names its generator (artifact_meta.generator); a shipped one must name
the shipped generator, so this copies both and rewrites that reference. It refuses a generator
other than the one the refiner was trained with (generator_sha256 in the refiner checkpoint).
Then run `posestream export` (or scripts/setup.sh) to refresh the ONNX files.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch

    from engines.checkpoint import MODELS_DIR, file_sha256

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refiner", required=True)
    p.add_argument("--generator", required=True)
    p.add_argument("--name", required=True, help="shipped name of the refiner (e.g. final)")
    p.add_argument("--generator-name", default="generator", help="shipped name of the generator")
    args = p.parse_args(argv)
    ck = torch.load(args.refiner, map_location="cpu", weights_only=False)
    if ck.get("kind") != "refiner":
        sys.exit(f"{args.refiner} is not a refiner checkpoint")
    sha = file_sha256(args.generator)
    if ck.get("generator_sha256") != sha:
        sys.exit(f"{args.refiner} was trained with another generator (sha256 {ck.get('generator_sha256')}, "
                 f"{args.generator} is {sha})")
    gen_out = MODELS_DIR / f"{args.generator_name}.pt"
    if not gen_out.is_file() or file_sha256(gen_out) != sha:
        shutil.copyfile(args.generator, gen_out)
    ck["artifact_meta"] = {**ck.get("artifact_meta", {}), "generator": args.generator_name}
    ck["shipped_from"] = str(args.refiner)
    torch.save(ck, MODELS_DIR / f"{args.name}.pt")
    print(f"shipped {MODELS_DIR / (args.name + '.pt')} with generator {gen_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
