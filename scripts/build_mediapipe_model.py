"""Build models/pose_landmarker_full.task offline and reproducibly.

No MediaPipe model hub is reachable, and current mediapipe wheels ship no pose model. The
mediapipe==0.10.21 wheel (Apache-2.0) contains the BlazePose detector and the *full*
landmark model; its metadata writer (which only imports in 0.10.21, numpy<2) adds the image
normalisation metadata the Tasks API needs. So this script:
  1. creates a throwaway venv under .cache/mp0_10_21 (gitignored) with mediapipe==0.10.21,
  2. runs the bundling step (below, `_bundle`) with that venv's python,
  3. writes the zip with fixed-date entries (AlignZipFile, 4-byte aligned, stored), so the
     bytes are identical on every build, and checks the sha256.
Recipe and facts: ../shared/notes/mediapipe-offline-model.md.

Usage:  python scripts/build_mediapipe_model.py [--if-missing] [--out PATH]
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "pose_landmarker_full.task"
VENV_DIR = ROOT / ".cache" / "mp0_10_21"
EXPECTED_SHA256 = "bbdd15ae3cd2a3c43e67394e707f55f86a55b502fd59c623f38911ee953f98fa"
PIP_SPECS = ["mediapipe==0.10.21", "numpy<2"]

# Runs inside the 0.10.21 venv: argv[1] = output path.
_BUNDLE = r'''
import sys, zipfile
from pathlib import Path
import mediapipe
from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils as mab

mods = Path(mediapipe.__file__).parent / "modules"
det = (mods / "pose_detection" / "pose_detection.tflite").read_bytes()
lmk = (mods / "pose_landmark" / "pose_landmark_full.tflite").read_bytes()
w = metadata_writer.MetadataWriter.create(bytearray(lmk))
w.add_general_info("Pose Landmarks Detector", "BlazePose GHUM 3D full (from mediapipe 0.10.21)")
w.add_image_input(norm_mean=[0.0], norm_std=[255.0])  # RGB, pixels -> [0, 1]
for n in ["landmarks", "pose presence", "segmentation", "heatmap", "world landmarks"]:
    w.add_feature_output(name=n)  # the model's 5 outputs, in model order
lmk_md, _ = w.populate()
with mab.AlignZipFile(sys.argv[1], mode="w", alignment=4) as zf:
    for name, buf in [("pose_detector.tflite", det), ("pose_landmarks_detector.tflite", bytes(lmk_md))]:
        # Fixed date: the stock helper stamps the current time, which breaks reproducibility.
        zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), buf)
'''


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_venv(venv_dir: Path) -> Path:
    """Create the throwaway 0.10.21 venv if needed; returns its python."""
    py = venv_dir / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import mediapipe; assert mediapipe.__version__ == '0.10.21'"],
                                        capture_output=True).returncode == 0
    if not ok:
        print(f"creating build venv {venv_dir} ({' '.join(PIP_SPECS)}) ...", flush=True)
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        # Keep the throwaway venv out of git without touching the project's .gitignore.
        (venv_dir.parent / ".gitignore").write_text("*\n")
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PIP_SPECS], check=True)
    return py


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--if-missing", action="store_true",
                    help="do nothing when OUT exists with the expected sha256")
    ap.add_argument("--venv", type=Path, default=VENV_DIR)
    args = ap.parse_args(argv)

    if args.out.exists() and sha256(args.out) == EXPECTED_SHA256:
        print(f"{args.out} is up to date (sha256 {EXPECTED_SHA256[:12]}...)")
        return 0
    if args.out.exists() and args.if_missing:
        print(f"{args.out} exists but its sha256 differs: rebuilding", file=sys.stderr)
    py = ensure_venv(args.venv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".task.tmp")
    subprocess.run([str(py), "-c", _BUNDLE, str(tmp)], check=True, capture_output=True)
    digest = sha256(tmp)
    if digest != EXPECTED_SHA256:
        tmp.unlink()
        print(f"error: built bundle has sha256 {digest}, expected {EXPECTED_SHA256}", file=sys.stderr)
        return 1
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
