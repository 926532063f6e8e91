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
