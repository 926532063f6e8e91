"""The command-line options the commands share, and what they become:

    add_model_arguments(parser, live)   --model, --backend, --threads, --fov, --calib,
                                        --[no-]fixed-bones, --mirror-2d (files), with the
                                        realtime.api.Options defaults (the API's and the CLI's)
    add_smoothing_arguments(parser)     --min-cutoff, --beta, --d-cutoff, --bones-window, --no-smooth
                                        (default_on=False: off unless --smooth or a setting is given)
    add_output_arguments(parser)        --out (realtime.writers), --serve/--host/--port/--token,
                                        --open3d, --osc (+ --vmc-mirror, --osc-rate)
    add_people_argument(parser)         --people N (several people, realtime.people), --fast-people
    options_from_args(args)             -> realtime.api.Options
    smoother_from_args(args)            -> the PoseSmoother the options ask for, or None
    check_report_paths(args, *options)  a report file's option (--json, --md) that cannot be
                                        written: UserError before the work, not after it
    write_report(path, text)            the report, written atomically (temp file + rename)
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable

from realtime.api import Options, default_model
from realtime.filters import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, SmootherConfig
from realtime.frames import PoseFrame

DEFAULT_BONES_WINDOW = SmootherConfig.bones_window


def _number(kind: type, low: float, low_ok: bool, high: float = math.inf) -> Callable[[str], Any]:
    """An argparse `type` for a finite number in [low, high] (or (low, high] with low_ok False):
    anything else (nan, inf, out of range) is a usage error naming the option, before any work."""
    what = f"{'an integer' if kind is int else 'a finite number'} {'>=' if low_ok else '>'} {low:g}"
    what += "" if high == math.inf else f" and <= {high:g}"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and (value >= low if low_ok else value > low) and value <= high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return convert


def host_name(text: str) -> str:
    """An argparse `type` for --host: a host name or address, not empty (an empty --host
    bound every interface but printed the unusable URL http://:PORT/)."""
    host = text.strip()
    if not host:
        raise argparse.ArgumentTypeError("must be a host name or address (0.0.0.0 for every interface), got ''")
    return host


positive_float = _number(float, 0, False)
non_negative_float = _number(float, 0, True)
positive_int = _number(int, 1, True)
non_negative_int = _number(int, 0, True)
port_number = _number(int, 0, True, 65535)


def check_report_paths(args: argparse.Namespace, *options: str) -> None:
    """UserError (exit 2) if the file an option such as --json or --md names cannot be
    written: checked before the work (a benchmark, an evaluation), so a bad path costs
    nothing. The checks are the video outputs' (realtime.writers.check_output_path: a folder
    where the file goes, a parent that is a file) and a file really created and removed
    where it goes (root passes os.access on /proc). `options` are the attribute names
    ("json", "md"); one not given (None) is skipped."""
    from engines.artifact import check_writable_file
    from engines.errors import UserError
    from realtime.writers import check_output_path

    for name in options:
        value = getattr(args, name, None)
        if not value:
            continue
        flag = "--" + name.replace("_", "-")
        try:
            check_output_path(Path(value), overwrite=True)
        except UserError as exc:
            raise UserError(f"{flag}: {exc}") from None
        check_writable_file(Path(value), flag)


def write_report(path: str | Path, text: str) -> None:
    """Write a report (JSON, Markdown) atomically: a temporary file in the same folder,
    renamed over `path`, so an interrupted run never leaves half a file; missing folders
    are created, as for the pose outputs. A symlink is written through, a device or pipe
    (/dev/stdout) in place (engines.artifact.write_report_text)."""
    from engines.artifact import write_report_text

    write_report_text(Path(path), text)


def add_smoothing_arguments(parser: argparse.ArgumentParser, default_on: bool = True) -> None:
    """The smoothing options. Live commands filter by default (--no-smooth turns it off);
    `default_on=False` (posestream video: files are for accuracy) leaves the output raw unless
    --smooth, or any of the filter's settings, is given. --no-smooth is accepted by both."""
    g = parser.add_argument_group(
        "smoothing (causal One Euro filter + bone-length stabiliser)",
        None if default_on else "OFF by default: files are for accuracy. --smooth turns it on, as does giving "
                                "any of its settings (--min-cutoff, --beta, --bones-window).")

    def default(value: float | int) -> float | int | None:
        return value if default_on else None  # None: "not given", so a setting can imply --smooth

    g.add_argument("--min-cutoff", type=positive_float, default=default(DEFAULT_MIN_CUTOFF),
                   help=f"One Euro cutoff when still, Hz; lower = steadier, more lag (default {DEFAULT_MIN_CUTOFF})")
    g.add_argument("--beta", type=non_negative_float, default=default(DEFAULT_BETA),
                   help=f"One Euro speed coefficient per mm/s; higher = less lag on fast moves (default {DEFAULT_BETA})")
    g.add_argument("--d-cutoff", type=positive_float, default=default(DEFAULT_D_CUTOFF), help=argparse.SUPPRESS)
    g.add_argument("--bones-window", type=non_negative_int, default=default(DEFAULT_BONES_WINDOW),
                   help=f"frames in the running median of bone lengths; 0 = off (default {DEFAULT_BONES_WINDOW})")
    if not default_on:
        g.add_argument("--smooth", action="store_true", help="filter the poses as `posestream webcam` does")
    g.add_argument("--no-smooth", action="store_true",
                   help="raw per-frame output (no filtering)" + ("" if default_on else "; the default here"))


def smoothing_options(args: argparse.Namespace) -> tuple[bool, SmootherConfig]:
    """(on, settings) from the smoothing options: off with --no-smooth, or, where smoothing
    is off by default, when neither --smooth nor a setting is given."""
    values = (args.min_cutoff, args.beta, args.d_cutoff, args.bones_window)
    off = args.no_smooth or (not getattr(args, "smooth", True) and all(v is None for v in values))
    defaults = (DEFAULT_MIN_CUTOFF, DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_BONES_WINDOW)
    min_cutoff, beta, d_cutoff, bones_window = (d if v is None else v for v, d in zip(values, defaults))
    return not off, SmootherConfig(min_cutoff, beta, d_cutoff, bones_window=bones_window)


def smoother_from_args(args: argparse.Namespace) -> Callable[[PoseFrame], PoseFrame] | None:
    """The smoother the options ask for, or None (smoothing off)."""
    on, config = smoothing_options(args)
    return Options(smooth=on, smoothing=config).smoother(live=on)


def add_model_arguments(parser: argparse.ArgumentParser, live: bool) -> None:
    """--model, --backend, --threads, --fov, --calib: the realtime.api.Options fields, with
    their defaults (the commands and the Python API share them)."""
    default = (default_model(live) if live else
               f"{default_model(False)} for a video, {default_model(True)} with --realtime, "
               f"{default_model(stills=True)} for a folder of unrelated images")
    parser.add_argument("--model", default=Options.model,
                        help=f"shipped model name or .onnx/.pt/.engine path (default {default}); "
                             f"a model of another kind is refused with the list of those this command runs")
    parser.add_argument("--backend", default=Options.backend,
                        help=f"auto, onnxruntime, tensorrt or torch (default {Options.backend}: TensorRT if usable, "
                             f"else ONNX Runtime)")
    # One thread: a batch-1 lifter takes well under a millisecond, and extra intra-op
    # threads (ONNX Runtime spins them between calls) steal CPU from MediaPipe.
    parser.add_argument("--threads", type=non_negative_int, default=Options.threads,
                        help=f"CPU threads for the lifter runtime (default {Options.threads})")
    parser.add_argument("--fov", type=float, default=Options.fov,
                        help="horizontal field of view in degrees (default 60)")
    parser.add_argument("--calib", metavar="FILE", default=Options.calib,
                        help='camera intrinsics JSON {"fx", "fy", "cx", "cy"} (pixels); overrides --fov')
    parser.add_argument("--fixed-bones", action=argparse.BooleanOptionalAction, default=Options.fixed_bones,
                        help="each person keeps one body: bone lengths estimated from their own poses, every pose "
                             "rebuilt with them along its own bone directions (default: on for files, off live, "
                             "where smoothing steadies bones; --fixed-bones live: a causal running estimate)")
    if not live:
        parser.add_argument("--mirror-2d", action="store_true", default=Options.mirror_2d,
                            help="also run MediaPipe on the mirrored frames and average the two 2D poses: more "
                                 "accurate and steadier 3D for a second MediaPipe run per frame, made beside the "
                                 "first (about 1.2x the time with two free cores, 2x on one; one person; not "
                                 "with --realtime)")


def options_from_args(args: argparse.Namespace) -> Any:
    """The realtime.api.Options a command's arguments ask for."""
    on, config = smoothing_options(args)
    return Options(model=args.model, backend=args.backend, fov=args.fov, calib=args.calib, threads=args.threads,
                   num_poses=getattr(args, "num_poses", Options.num_poses),
                   image_mode=getattr(args, "image_mode", Options.image_mode),
                   people=getattr(args, "people", Options.people),
                   fast_people=getattr(args, "fast_people", Options.fast_people), smooth=on, smoothing=config,
                   sequence=getattr(args, "sequence", Options.sequence),
                   root_filter=not getattr(args, "raw_root", not Options.root_filter),
                   fixed_bones=getattr(args, "fixed_bones", Options.fixed_bones),
                   mirror_2d=getattr(args, "mirror_2d", Options.mirror_2d))


def add_people_argument(parser: argparse.ArgumentParser) -> None:
    """--people N: track and lift up to N people (realtime.people)."""
    parser.add_argument("--people", type=positive_int, default=Options.people, metavar="N",
                        help=f"track up to N people, each with a stable id, all lifted into one camera space "
                             f"(default {Options.people}: one person, the fastest)")
    parser.add_argument("--fast-people", action="store_true", default=Options.fast_people,
                        help="with --people N: people apart from everyone else found by MediaPipe's landmark model "
                             "alone, all in one call per frame (about 2x faster at 2 people; identities somewhat "
                             "less stable: docs/multiperson.md)")


def add_output_arguments(parser: argparse.ArgumentParser, include_out: bool = True) -> None:
    """The live outputs' options. include_out adds the file outputs (--out, repeatable,
    --no-overwrite and the formats' options: realtime.writers.add_file_arguments); a command
    that adds those itself (posestream video) passes include_out=False."""
    if include_out:
        from realtime.writers import add_file_arguments

        add_file_arguments(parser)
    g = parser.add_argument_group("outputs")
    g.add_argument("--serve", action="store_true", help="stream to the browser viewer (websocket + HTTP)")
    g.add_argument("--host", type=host_name, default="127.0.0.1", help="--serve address (default 127.0.0.1, this machine only)")
    g.add_argument("--port", type=port_number, default=8765, help="--serve port (default 8765; 0 = any free port)")
    from realtime.server import add_token_arguments
    add_token_arguments(g, "--serve: viewers must present this token")
    g.add_argument("--open3d", action="store_true", help="show the skeleton in an Open3D window")
    g.add_argument("--osc", metavar="[HOST:]PORT", nargs="?", const="39539",
                   help="stream the pose to a VMC protocol receiver over UDP (default 127.0.0.1:39539; "
                        "docs/mocap.md)")
    from realtime.osc_sink import add_vmc_arguments

    add_vmc_arguments(g)
