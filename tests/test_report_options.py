"""The benchmarks' and the evaluation's options: numbers out of range and report files
(--json, --md) that cannot be written are usage errors (exit 2) found before any work."""
from __future__ import annotations

from pathlib import Path

import pytest

from realtime.cli import main


@pytest.mark.parametrize("argv, message", [
    (["bench-live", "--camera-fps", "0"], "argument --camera-fps: must be a finite number > 0, got '0'"),
    (["bench-live", "--camera-fps", "-30"], "argument --camera-fps: must be a finite number > 0"),
    (["bench-live", "--standin-ms", "-1"], "argument --standin-ms: must be a finite number >= 0"),
    (["bench-live", "--repeats", "0"], "argument --repeats: must be an integer >= 1"),
    (["bench-live", "--frames", "-5"], "argument --frames: must be an integer >= 1"),
    (["bench-live", "--threads", "-1"], "argument --threads: must be an integer >= 0"),
    (["bench-startup", "--rounds", "0"], "argument --rounds: must be an integer >= 1"),
    (["bench-startup", "--frames", "-1"], "argument --frames: must be an integer >= 0"),
])
def test_benchmark_numbers_out_of_range_are_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"posestream {argv[0]}: error: {message}" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["bench-live", "bench-startup"])
def test_benchmark_json_that_cannot_be_written_is_refused_before_the_benchmark(command, tmp_path, capsys,
                                                                                monkeypatch):
    import realtime.bench_live
    import realtime.bench_startup

    def not_reached(*a, **k):
        raise AssertionError("the benchmark started although --json cannot be written")

    monkeypatch.setattr(realtime.bench_live, "load_frames", not_reached)
    monkeypatch.setattr(realtime.bench_startup, "cut_clip", not_reached)
    (tmp_path / "afile").write_text("x")
    assert main([command, "--json", str(tmp_path / "afile" / "x.json")]) == 2
    err = capsys.readouterr().err
    assert f"posestream {command}: error: --json" in err and "is not a folder" in err
    assert main([command, "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_eval_bad_every_data_and_report_paths_are_one_line_usage_errors(tmp_path, capsys):
    assert main(["eval", "--data", "x.npz", "--every", "0"]) == 2
    assert "argument --every: must be an integer >= 1, got '0'" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive\n")
    for extra in ([], ["--input", "gt"]):
        assert main(["eval", "--data", str(junk), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not an .npz archive" in err and "allow_pickle" not in err and "Traceback" not in err
    (tmp_path / "afile").write_text("x")
    assert main(["eval", "--data", str(junk), "--md", str(tmp_path / "afile" / "t.md")]) == 2
    assert "--md: cannot write" in capsys.readouterr().err


def test_eval_real_frames_folder_refuses_an_input_it_does_not_have(tmp_path, capsys, monkeypatch):
    from train import eval_renders

    seen = []
    monkeypatch.setattr(eval_renders, "evaluate_real_frames",
                        lambda root, model, compare, input_kind: seen.append(input_kind) or {})
    monkeypatch.setattr(eval_renders, "real_markdown", lambda out: "table")
    assert main(["eval", "--data", str(tmp_path), "--input", "sh"]) == 2
    assert "--input sh" in (err := capsys.readouterr().err) and "no SH detections" in err and seen == []
    assert main(["eval", "--data", str(tmp_path)]) == 0  # the folder's default: MediaPipe
    assert main(["eval", "--data", str(tmp_path), "--input", "gt"]) == 0  # the annotated 2D, honoured
    assert seen == ["mp", "gt"]


def test_eval_final_model_on_an_npz_says_it_needs_image_cues(h36m_val, capsys):
    assert main(["eval", "--data", str(h36m_val), "--input", "gt", "--model", "final", "--every", "1000"]) == 2
    err = capsys.readouterr().err
    assert "needs image cues (coarse_mm, fbi_prob)" in err and "has no images" in err
    assert "expected inputs" not in err


@pytest.mark.parametrize("option, value, message", [
    ("--limit", "-1", "argument --limit: must be an integer >= 1, got '-1'"),
    ("--limit", "0", "argument --limit: must be an integer >= 1, got '0'"),
    ("--shard-size", "0", "argument --shard-size: must be an integer >= 1"),
    ("--every", "0", "argument --every: must be an integer >= 1"),
    ("--workers", "0", "argument --workers: must be an integer >= 1"),
    ("--seed", "-1", "argument --seed: must be an integer >= 0"),
    ("--seconds", "0", "argument --seconds: must be a finite number > 0"),
])
def test_render_counts_out_of_range_are_usage_errors_and_write_nothing(option, value, message, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["render", "--data", str(tmp_path / "x.npz"), "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert f"posestream render: error: {message}" in err and not out.exists()


def test_an_option_the_command_lacks_is_reported_with_the_command_usage(capsys):
    assert main(["webcam", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "usage: posestream webcam" in err and "posestream webcam: error: unrecognized arguments: --no-progress" in err
    assert main(["--bogus"]) == 2  # no command: the top-level usage, as before
    assert "posestream: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_export_refuses_calib_without_tensorrt_int8_and_an_unwritable_out(tmp_path, capsys, monkeypatch):
    assert main(["export", "--model", "base_gt", "--format", "onnx", "--calib", "nosuch.npz"]) == 2
    assert "--calib is the calibration input of --format tensorrt --int8" in capsys.readouterr().err
    assert main(["export", "--model", "base_gt", "--format", "onnx", "--int8", "--calib", "nosuch.npz"]) == 2
    assert "takes no calibration data" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["export", "--model", "base_gt", "--format", "onnx", "--out", str(tmp_path / "afile" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "MB free" not in err
    locked = tmp_path / "locked"
    locked.mkdir()
    import tempfile

    real = tempfile.mkstemp

    def refuse(*a, dir=None, **k):  # a folder that cannot be written, as /proc is even for root
        if Path(dir) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["export", "--model", "base_gt", "--format", "onnx", "--out", str(locked / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "the folder" in err and "is not writable" in err and "MB free" not in err


def test_a_report_goes_through_symlinks_into_devices_and_with_a_plain_files_mode(tmp_path):
    import os
    import stat

    from realtime.cli_options import check_report_paths, write_report

    target = tmp_path / "real.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_report(link, "new")
    assert link.is_symlink() and target.read_text() == "new"          # the link kept, its target written
    assert stat.S_IMODE(target.stat().st_mode) == 0o644                # the existing file's mode kept
    fresh = tmp_path / "fresh.json"
    write_report(fresh, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask         # not the temp file's 0600
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    import threading
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    write_report(fifo, "through a pipe")                               # written in place, not replaced
    reader.join(5)
    assert got == ["through a pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)
    from types import SimpleNamespace

    check_report_paths(SimpleNamespace(json=os.devnull), "json")       # /dev/null is writable as is
