"""The `posestream` command line: a thin `main(argv)` over the commands' modules.

Each subcommand lives in a module that exposes `add_arguments(parser)` and `run(args) -> int`
and keeps heavy imports (mediapipe, onnxruntime, torch) inside `run`. Only the command being
run is imported (its parser is built from its module); `posestream --help` imports none, so
it is instant and never loads torch.

The tables below are the one place the commands are listed, in help order: APP_COMMANDS are
what users run, TOOL_COMMANDS the benchmarks and the exporter, TRAINING_COMMANDS training and
evaluation. The training commands live in the `train` package, which the application never
imports: this table names them as strings, and `train` is imported only to run one of them
(their help lines are read from the modules' docstrings without importing them).

Global options: --version, -v/--verbose (INFO logs, and MediaPipe's and the exporters' own
log lines; -vv: DEBUG and tracebacks), -q/--quiet (errors only). Exit status: 0 done,
1 runtime failure, 2 usage error (bad option, missing or unusable input), 130 Ctrl-C,
143 SIGTERM (handled as Ctrl-C).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType
from typing import Callable

from engines.errors import Interrupted, UserError

# name -> (module, one-line help). Modules are imported only when run.
APP_COMMANDS: dict[str, tuple[str, str]] = {
    "video": ("realtime.video_cmd", "3D pose over a whole video or image folder, written to .npz/.json/.csv/.bvh"),
    "webcam": ("realtime.webcam_cmd", "live 3D pose from a webcam (or a video as one): viewer, Open3D, file, OSC"),
    "serve": ("realtime.serve_cmd", "replay a pose file (.npz or viewer .jsonl) to browser viewers"),
    "recover": ("realtime.recover_cmd", "rebuild the outputs of an interrupted run from its journal (OUT.part)"),
    "stability": ("realtime.stability", "jitter, bone-length CV, root steps and lag of a pose file (vs MediaPipe)"),
    "batch": ("realtime.batch_cmd", "3D pose files for many videos at once, on Ray (this machine or a cluster)"),
}
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("realtime.bench", "frame rate of MediaPipe alone vs MediaPipe + lifter + writing"),
    "bench-live": ("realtime.bench_live", "live pipeline throughput vs MediaPipe alone, capture-to-output latency"),
    "bench-startup": ("realtime.bench_startup", "start-up time and memory of `video` vs MediaPipe alone (processes)"),
    "export": ("engines.export", "export a model to ONNX or a TensorRT engine"),
}
# name -> module; the help line is the module docstring's first line.
TRAINING_COMMANDS: dict[str, str] = {
    "train": "train.recipe_cmd",
    "eval": "train.evaluate",
    "train-lifter": "train.train_lifter",
    "train-generator": "train.train_generator",
    "train-adversarial": "train.adversarial",
    "train-refiner": "train.train_refiner",
    "ensemble": "train.ensemble",
    "render": "train.render_cmd",
    "mp-error": "train.mp_error",
}
GROUPS = ("commands", "benchmarks and tools", "training and evaluation (needs the [train] extra)")
# Modules the training extra brings; a training command run without them gets a one-line hint.
TRAIN_EXTRA_MODULES = ("torch", "onnx", "onnxscript", "numba")
EPILOG = ("`posestream COMMAND -h` shows a command's options.\n"
          "Exit status: 0 done, 1 failed, 2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")


@dataclass(frozen=True)
class Command:
    """A subcommand: its group (index into GROUPS), how to load its module, and its help line
    (a callable, so a training command's docstring is read only when help is shown)."""

    name: str
    group: int
    load: Callable[[], ModuleType]
    help: Callable[[], str]


def _static(name: str, group: int, module: str, help_line: str) -> Command:
    return Command(name, group, lambda: importlib.import_module(module), lambda: help_line)


def _docstring_line(module: str) -> str:
    """The first docstring line of `module`, read from its source without importing it or its
    package (a training module imports torch)."""
    top, *rest = module.split(".")
    try:
        spec = find_spec(top)
        if spec is None:
            return ""
        if rest:
            base = Path(next(iter(spec.submodule_search_locations or [])), *rest[:-1])
            source = next(p for p in (base / f"{rest[-1]}.py", base / rest[-1] / "__init__.py") if p.is_file())
        else:
            source = Path(spec.origin or "")
        with open(source, encoding="utf-8") as fh:
            doc = ast.get_docstring(ast.parse(fh.read()))
    except (ImportError, OSError, SyntaxError, ValueError, StopIteration):
        return ""
    return (doc or "").strip().splitlines()[0] if doc else ""


def commands() -> dict[str, Command]:
    """Every command, in help order."""
    found = {name: _static(name, 0, mod, h) for name, (mod, h) in APP_COMMANDS.items()}
    found.update({name: _static(name, 1, mod, h) for name, (mod, h) in TOOL_COMMANDS.items()})
    for name, mod in TRAINING_COMMANDS.items():
        found[name] = Command(name, 2, lambda m=mod: importlib.import_module(m), lambda m=mod: _docstring_line(m))
    return found


def _listing(cmds: dict[str, Command]) -> str:
    width = max(len(n) for n in cmds) + 2
    blocks = []
    for g, title in enumerate(GROUPS):
        lines = [f"  {c.name:<{width}}{c.help()}" for c in cmds.values() if c.group == g]
        if lines:
            blocks.append(f"{title}:\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def _verbosity(parser: argparse.ArgumentParser, on_subcommand: bool) -> None:
    # On a subcommand the defaults are suppressed, so `posestream -v video ...` and
    # `posestream video ... -v` both work without one overriding the other.
    kw = {"default": argparse.SUPPRESS} if on_subcommand else {}
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", help="more output: INFO logs and MediaPipe's and the "
                   "exporters' own log lines (-vv: DEBUG, tracebacks)", **({"default": 0} | kw))
    g.add_argument("-q", "--quiet", action="store_true", help="errors only on stderr (no progress bar, status line or warnings)",
                   **({"default": False} | kw))


class _VersionAction(argparse.Action):
    """--version, reading the version only when asked (importing the package costs time)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from posestream._version import __version__

        print(f"posestream {__version__}")
        parser.exit()


def _command_in(argv: list[str], cmds: dict[str, Command]) -> str | None:
    """The subcommand named in argv: the first argument that is not an option (the global
    options take no values)."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in cmds else None
    return None


def build_parser(cmds: dict[str, Command] | None = None, populate: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the `populate` command gets its options (its module is imported)."""
    cmds = commands() if cmds is None else cmds
    parser = argparse.ArgumentParser(
        prog="posestream", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        usage="posestream [-h] [--version] [-v | -q] COMMAND ...",
        description="Live monocular 3D human pose from a webcam or a video file.\n\n"
                    + (_listing(cmds) if populate is None else ""))
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version and exit")
    _verbosity(parser, on_subcommand=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)
    for name, cmd in cmds.items():
        if name != populate:
            sub.add_parser(name)
            continue
        mod = cmd.load()
        p = sub.add_parser(name, prog=f"posestream {name}", description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        _verbosity(p, on_subcommand=True)
        p.set_defaults(_run=mod.run)
        parser.command_parser = p  # type: ignore[attr-defined]  # _main reports unknown options with its usage
    return parser


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log level for our loggers, and whether the native libraries may print: MediaPipe /
    LiteRT / absl write to fd 2 directly (realtime.detector silences them unless
    POSESTREAM_MEDIAPIPE_LOGS is set); the ONNX exporter's warnings show at INFO only
    (engines.export)."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="posestream: %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    if verbose:
        os.environ["POSESTREAM_MEDIAPIPE_LOGS"] = "1"
    else:
        os.environ.setdefault("GLOG_minloglevel", "2")  # glog/absl: errors only
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    top = (exc.name or "").split(".")[0]
    if top in TRAIN_EXTRA_MODULES:
        return f"this command needs {top}, from the training extra: pip install 'posestream[train]'"
    return None


def _terminate(signum: int, frame: object) -> None:
    raise Interrupted(signum)


class _StartUpSignals:
    """Ctrl-C and SIGTERM while the CLI imports a command: the first is noted and acted upon
    once the import is done (an exception raised inside native code that calls back into
    Python, as imports of compiled libraries do, aborts the process); a second one raises
    at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)
        self.signum = signum


def _interrupted(exc: KeyboardInterrupt) -> int:
    """One line for Ctrl-C or SIGTERM (also during start-up); 130 or 143."""
    code = getattr(exc, "exit_code", 130)
    print("terminated" if code == 128 + signal.SIGTERM else "interrupted", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run a command. SIGTERM stops it as Ctrl-C does (its `finally` blocks run, files are
    completed; the commands that write files handle both themselves, realtime.interrupts.
    DeferredInterrupt); during start-up either signal gives one line, exit 130 / 143."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    start_up = _StartUpSignals()
    try:
        for sig, handler in previous.items():
            if handler is not signal.SIG_IGN:  # e.g. SIGINT of a background job stays ignored
                signal.signal(sig, start_up)
        return _main(argv, start_up, previous)
    except KeyboardInterrupt as exc:  # a second signal during start-up
        return _interrupted(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None, start_up: _StartUpSignals, previous: dict) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmds = commands()
    name = _command_in(argv, cmds)
    try:
        parser = build_parser(cmds, name)
        # parse_known_args, so that an option the command does not have is reported with the
        # command's usage line ("posestream webcam: error: unrecognized arguments: ..."), not
        # the top-level one, which says nothing about the command's options.
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            getattr(parser, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ModuleNotFoundError as exc:  # a training command without the [train] extra
        hint = _missing_extra(exc)
        if hint is None:
            raise
        print(f"posestream {name}: error: {hint}", file=sys.stderr)
        return 1
    if start_up.signum is not None:
        return _interrupted(Interrupted(start_up.signum))
    if previous:
        signal.signal(signal.SIGINT, previous[signal.SIGINT])
        signal.signal(signal.SIGTERM, _terminate)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"posestream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except ModuleNotFoundError as exc:
        hint = _missing_extra(exc)
        print(f"posestream {args.command}: error: {hint or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a runtime failure: one line (the traceback with -vv)
        logging.getLogger("posestream").debug("traceback", exc_info=exc)
        print(f"posestream {args.command}: error: {type(exc).__name__}: {exc}"
              + ("" if args.verbose > 1 else " (-vv shows the traceback)"), file=sys.stderr)
        return 1


def entry() -> None:
    """The `posestream` executable: `main`, then a fast exit. Everything the command wrote is
    closed by then (outputs are finalised before `main` returns), so the interpreter's
    teardown, which only frees memory and unloads MediaPipe's and ONNX Runtime's native
    libraries, is skipped: on a short clip it is a noticeable part of the run."""
    rc = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


if __name__ == "__main__":
    entry()
