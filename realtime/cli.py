"""The `posestream` command line: a thin `main(argv)`.

Each subcommand lives in a module that exposes `add_arguments(parser)` and `run(args) -> int`
and keeps heavy imports (torch, mediapipe) inside `run`, so `posestream --help` is instant.
The application's own commands are listed here; training commands (eval, train, render)
live in the `train` package, which `realtime` must not import, so they are found through
the `posestream.commands` entry-point group declared in pyproject.toml.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points
from types import ModuleType

from engines.errors import UserError

# name -> (module, one-line help). Modules are imported only when listed or run.
APP_COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("engines.export", "export a model to ONNX or a TensorRT engine"),
    "video": ("realtime.video_cmd", "3D pose over a whole video, written to .npz/.json/.csv/.bvh"),
    "bench": ("realtime.bench", "frame rate of MediaPipe alone vs MediaPipe + lifter + writing"),
    "serve": ("realtime.serve_cmd", "replay a pose file (.npz or viewer .jsonl) to browser viewers"),
    "bench-live": ("realtime.bench_live", "live pipeline throughput vs MediaPipe alone, capture-to-output latency"),
    "webcam": ("realtime.webcam_cmd", "live 3D pose from a webcam (or a video as one): viewer, Open3D, file"),
}


def _command_modules() -> dict[str, ModuleType]:
    mods: dict[str, ModuleType] = {}
    for name, (modname, _help) in APP_COMMANDS.items():
        mods[name] = importlib.import_module(modname)
    for ep in entry_points(group="posestream.commands"):
        try:
            mods.setdefault(ep.name, ep.load())
        except ImportError as exc:  # a broken optional install must not break the others
            print(f"posestream: command {ep.name!r} unavailable: {exc}", file=sys.stderr)
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posestream", description="Live monocular 3D human pose.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in sorted(_command_modules().items()):
        doc = (mod.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else name, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"posestream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
