#!/usr/bin/env bash
# One-command set-up for a fresh Debian machine, idempotent:
#   Debian packages -> .venv with the Python packages (runtime + train/viz/test extras, at the
#   versions in constraints.txt) -> npm packages for the viewer ->
#   model files (offline MediaPipe bundle, ONNX exports) -> the demo (unless --no-demo).
# Usage: bash scripts/setup.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=1
for a in "$@"; do
  case "$a" in
    --no-demo) DEMO=0 ;;
    *) echo "usage: bash scripts/setup.sh [--no-demo]" >&2; exit 2 ;;
  esac
done
log() { printf '\n== %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------
# chromium: browser tests; ffmpeg: H.264 demo output; libusb/libegl/libgl/xvfb: Open3D window
# (headless via Xvfb); mesa: software OpenGL.
APT_PKGS=(chromium ffmpeg libusb-1.0-0 libegl1 libgl1 libglib2.0-0 xvfb xauth libgl1-mesa-dri)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python ----------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import posestream, engines, realtime, train, torch, mediapipe, onnxruntime, websockets, open3d, playwright, ray" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.posestream-installed ] || [ setup.py -nt .venv/.posestream-installed ] \
   || [ constraints.txt -nt .venv/.posestream-installed ]; then
  log "installing Python packages (constraints.txt; torch==2.13.0 CPU)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[train,viz,test,batch]"
  touch .venv/.posestream-installed
fi

# --- npm (three.js for the viewer) -----------------------------------------------------
if [ -f web_viewer/package.json ]; then
  if [ ! -d web_viewer/node_modules ] || [ web_viewer/package-lock.json -nt web_viewer/node_modules ]; then
    log "installing npm packages for web_viewer"
    npm ci --prefix web_viewer --no-audit --no-fund --loglevel=error
  fi
  if [ -x web_viewer/build.sh ]; then bash web_viewer/build.sh; fi
fi

# --- model files -----------------------------------------------------------------------
if [ -f scripts/build_mediapipe_model.py ]; then
  .venv/bin/python scripts/build_mediapipe_model.py --if-missing
fi
# ONNX of every shipped checkpoint (missing or exported from an older .pt), so the app's
# ONNX Runtime path never needs torch at run time.
.venv/bin/python -c "from engines.onnx_export import refresh_shipped_onnx; refresh_shipped_onnx(log=lambda s: print('[setup]', s))"

# --- demo ------------------------------------------------------------------------------
if ((DEMO)); then
  log "demo: posestream video assets/demo.mp4 -> out/demo.{bvh,npz}"
  mkdir -p out
  .venv/bin/posestream video assets/demo.mp4 --out out/demo.bvh --out out/demo.npz
  echo "wrote out/demo.bvh and out/demo.npz; view them with: .venv/bin/posestream serve out/demo.npz"
fi
log "set-up done"
