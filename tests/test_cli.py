"""The `posestream` command line itself: help order, --version, -v/-q, exit statuses, the
--model check, and that the app's commands never import torch (or the training package)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from realtime import cli
from realtime.cli import main
from tests.video_serve import DEMO, REPO, needs_shipped_model


def _posestream(*args: str, code: str = "pass", timeout: float = 120) -> subprocess.CompletedProcess:
    """`posestream ARGS` in a fresh interpreter, then `code` (e.g. a check of sys.modules)."""
    prog = f"import sys; from realtime.cli import main; rc = main({list(args)!r}); {code}; sys.exit(rc)"
    return subprocess.run([sys.executable, "-c", prog], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_help_lists_user_commands_first_then_tools_then_training(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    pos = {name: out.index(f"\n  {name} ") for name in ("video", "webcam", "serve", "bench", "export", "eval",
                                                          "train-lifter")}
    assert pos["video"] < pos["webcam"] < pos["serve"] < pos["bench"] < pos["export"] < pos["eval"]
    assert out.index("commands:") < out.index("benchmarks and tools:") < out.index("training and evaluation")
    assert pos["eval"] > out.index("training and evaluation") and pos["train-lifter"] > pos["eval"]


def test_help_imports_no_command_module():
    r = _posestream("--help", code="bad = sorted(m for m in sys.modules if m.split('.')[0] in "
                                   "('torch', 'numpy', 'cv2', 'mediapipe', 'onnxruntime', 'train') "
                                   "or m.startswith('realtime.') and m != 'realtime.cli'); print(bad)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_help_lines_are_whole_sentences_and_name_every_exit_status(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listing = [ln for ln in out.splitlines() if ln.startswith("  ") and not ln.lstrip().startswith("-")]
    for name, cmd in cli.commands().items():  # a training command's line: its docstring's first line
        line = next(ln for ln in listing if ln.split()[0] == name)
        assert cmd.group < 2 or line.rstrip().endswith("."), f"cut off mid-sentence: {line}"
    assert "mp-error" in out and "turns exact 2D into\n" not in out
    assert "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)" in out


def test_video_report_names_the_window_and_the_frames_it_reads():
    from types import SimpleNamespace

    from engines.temporal import AVERAGED_STAGE
    from realtime.estimator import PoseEstimator
    from realtime.history import TemporalSpec

    est = object.__new__(PoseEstimator)
    est.detector = SimpleNamespace(mirror=False)
    est.temporal, est.lifter = TemporalSpec(83, 0.04, False), SimpleNamespace(metadata={"stage": AVERAGED_STAGE})
    assert est.describe().startswith("temporal lifter (81-frame window 40 ms apart, averaged over +-40 ms "
                                     "(83 frames), centred, reading 1.6 s past each frame")
    est.temporal, est.lifter = TemporalSpec(81, 0.04, True), SimpleNamespace(metadata={"stage": "temporal_conv81"})
    assert est.describe() == "temporal lifter (81 frames 40 ms apart, causal)"


def test_version(capsys):
    from posestream import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"posestream {__version__}"


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["video"]) == 2  # IN and --out missing
    assert main(["video", str(DEMO), "--out", "x.npz", "-v", "-q"]) == 2  # mutually exclusive
    err = capsys.readouterr().err
    assert "invalid choice" in err and "required" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["video", "IMAGES", "--sequence", "--fps", "0"], "argument --fps: must be a finite number > 0, got '0'"),
    (["video", "IMAGES", "--sequence", "--fps", "-5"], "argument --fps: must be a finite number > 0"),
    (["video", "IMAGES", "--sequence", "--fps", "nan"], "argument --fps: must be a finite number > 0"),
    (["video", "IMAGES", "--sequence", "--fps", "inf"], "argument --fps: must be a finite number > 0"),
    (["video", "IMAGES", "--bones-window", "-3"], "argument --bones-window: must be an integer >= 0"),
    (["video", "IMAGES", "--beta", "nan"], "argument --beta: must be a finite number >= 0"),
    (["video", "IMAGES", "--min-cutoff", "0"], "argument --min-cutoff: must be a finite number > 0"),
    (["video", "IMAGES", "--people", "0"], "argument --people: must be an integer >= 1"),
    (["video", "IMAGES", "--threads", "-1"], "argument --threads: must be an integer >= 0"),
    (["webcam", "--port", "70000"], "argument --port: must be an integer >= 0 and <= 65535"),
    (["serve", "x.npz", "--fps", "0"], "argument --fps: must be a finite number > 0"),
    (["serve", "x.npz", "--duration", "-1"], "argument --duration: must be a finite number > 0"),
    (["video", "IMAGES", "--max-frames", "0"], "argument --max-frames: must be an integer >= 1"),
    (["webcam", "--max-frames", "-2"], "argument --max-frames: must be an integer >= 1"),
    (["webcam", "--width", "0"], "argument --width: must be an integer >= 1"),
    (["webcam", "--stall-timeout", "nan"], "argument --stall-timeout: must be a finite number > 0"),
    (["webcam", "--osc", "--osc-person", "-1"], "argument --osc-person: wants a track id (an integer >= 0)"),
])
def test_numeric_options_out_of_range_are_usage_errors_before_any_work(argv, message, capsys, monkeypatch, tmp_path):
    import realtime.api

    def not_reached(*a, **k):
        raise AssertionError("work started although an option is out of range")

    monkeypatch.setattr(realtime.api.Estimator, "from_options", not_reached)
    argv = [str(tmp_path) if a == "IMAGES" else a for a in argv]
    assert main([*argv, "--out", str(tmp_path / "o.npz")] if argv[0] == "video" else argv) == 2
    err = capsys.readouterr().err
    assert f"posestream {argv[0]}: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()


def test_misleading_messages_say_what_is_wrong(tmp_path, capsys):
    import os

    not_model = tmp_path / "passwd"
    not_model.write_text("root:x:0:0\n")
    assert main(["video", str(DEMO), "--out", str(tmp_path / "o.npz"), "--model", str(not_model)]) == 2
    err = capsys.readouterr().err
    assert "is not a model checkpoint or ONNX model" in err and "not a file" not in err
    assert main(["video", os.devnull, "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "is not a regular file" in err and "not found" not in err
    assert main(["bench", str(DEMO), "--max-frames", "0"]) == 2
    err = capsys.readouterr().err
    assert "argument --max-frames: must be an integer >= 1" in err and "decodable" not in err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("exc, status, text", [
    (OSError(28, "No space left on device"), 1, "No space left on device"),
    (RuntimeError("CUDA launch failed"), 1, "CUDA launch failed"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_runtime_failures_exit_1_and_ctrl_c_130(monkeypatch, capsys, exc, status, text):
    import realtime.serve_cmd

    def boom(args):
        raise exc

    monkeypatch.setattr(realtime.serve_cmd, "run", boom)
    assert main(["serve", "x.npz"]) == status
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_training_command_without_the_train_extra_is_one_line(monkeypatch, capsys):
    import importlib

    real = importlib.import_module

    def no_torch(name, *a, **kw):
        if name.startswith("train."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", no_torch)
    monkeypatch.setattr(cli, "commands", lambda: {"eval": cli._static("eval", 2, "train.evaluate", "evaluate")})
    assert main(["eval", "--data", "x.npz"]) == 1
    assert "pip install 'posestream[train]'" in capsys.readouterr().err


def test_verbosity_options_anywhere(monkeypatch):
    seen = {}
    import realtime.serve_cmd

    monkeypatch.setattr(realtime.serve_cmd, "run", lambda args: seen.update(v=args.verbose, q=args.quiet) or 0)
    monkeypatch.setattr(cli, "configure_logging", lambda v, q: None)
    assert main(["-v", "serve", "x.npz"]) == 0 and seen == {"v": 1, "q": False}
    assert main(["serve", "x.npz", "-vv"]) == 0 and seen == {"v": 2, "q": False}
    assert main(["serve", "x.npz", "-q"]) == 0 and seen == {"v": 0, "q": True}


@needs_shipped_model
def test_model_outside_what_the_command_runs_is_refused_with_the_list(tmp_path, capsys):
    from realtime.estimator import runnable_models

    runnable = runnable_models()
    assert "base_gt" in runnable and "generator" not in runnable
    assert main(["video", str(DEMO), "--out", str(tmp_path / "o.npz"), "--model", "generator"]) == 2
    err = capsys.readouterr().err
    assert "generator model" in err and ", ".join(runnable) in err and len(err.strip().splitlines()) == 1
    assert main(["video", str(DEMO), "--out", str(tmp_path / "o.npz"), "--model", "nonesuch"]) == 2
    assert "unknown model 'nonesuch'" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()


@needs_shipped_model
def test_video_and_webcam_never_import_torch(tmp_path):
    """The app's commands run on ONNX Runtime: no torch, onnx, numba or training package is
    imported, so a runtime install without them works (tests/test_wheel.py installs one)."""
    check = ("bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript', 'numba', "
             "'train')); print('IMPORTED', bad)")
    runs = [("video", str(DEMO), "--out", str(tmp_path / "v.npz"), "--max-frames", "3", "--model", "base_gt"),
            ("video", str(DEMO), "--out", str(tmp_path / "f.npz"), "--max-frames", "2"),  # the default model
            ("webcam", "--camera", str(DEMO), "--max-frames", "5", "--out", str(tmp_path / "w.npz"), "-q")]
    for args in runs:
        r = _posestream(*args, code=check)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "IMPORTED []" in r.stdout, (args, r.stdout[-500:])


@needs_shipped_model
def test_webcam_without_outputs_serves_the_viewer(tmp_path):
    r = _posestream("webcam", "--camera", str(DEMO), "--max-frames", "5", "--port", "0", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "serving the browser viewer" in r.stderr and "viewer: http://127.0.0.1:" in r.stderr


@needs_shipped_model
def test_quiet_video_prints_no_progress_bar(tmp_path):
    r = _posestream("video", str(DEMO), "--out", str(tmp_path / "q.json"), "--max-frames", "2", "--model", "base_gt",
                    "-q")
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr[-2000:]
    assert len(json.loads((tmp_path / "q.json").read_text())["frames"]) == 2
