"""Interrupted runs through the real command line (`python -m realtime.cli`, #22): SIGTERM is
handled as Ctrl-C (the files completed, exit 143), two Ctrl-C 50 ms apart still leave
complete files, and Ctrl-C or SIGTERM during start-up print one line, no traceback, and
leave nothing behind."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bvh_reader import read_bvh  # noqa: E402

from realtime.detector import DEFAULT_MODEL  # noqa: E402
from realtime.journal import journal_frames  # noqa: E402
from realtime.writers import read_pose_npz  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "assets" / "demo.mp4"
pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"{DEFAULT_MODEL} missing")
MODEL = ["--model", "base_gt", "--backend", "onnxruntime"]


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "realtime.cli", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_library(proc: subprocess.Popen, name: str, timeout_s: float = 60.0) -> None:
    """Until the process has mapped a shared library whose path contains `name`: a point in
    its start-up that does not depend on how fast the machine is."""
    deadline = time.monotonic() + timeout_s
    while name not in Path(f"/proc/{proc.pid}/maps").read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{name} never loaded"
        time.sleep(0.002)


def _signal_mid_run(proc: subprocess.Popen, part: Path, signals: list[int], gap_s: float = 0.05,
                    after_frames: int = 10) -> tuple[str, str]:
    deadline = time.monotonic() + 120
    while journal_frames(part) < after_frames:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not start writing"
        time.sleep(0.02)
    for k, sig in enumerate(signals):
        if k:
            time.sleep(gap_s)
        proc.send_signal(sig)
    return proc.communicate(timeout=120)


def _summary_frames(out: str) -> int:
    return int(re.search(r"(\d+) frames \(", out).group(1))


def test_sigterm_completes_every_output_and_exits_143(tmp_path: Path):
    npz, bvh = tmp_path / "t.npz", tmp_path / "t.bvh"
    proc = _start("video", str(DEMO), "--out", str(npz), "--out", str(bvh), "--realtime", "--no-progress", *MODEL)
    out, err = _signal_mid_run(proc, tmp_path / "t.npz.part", [signal.SIGTERM])
    assert proc.returncode == 143, err[-3000:]
    assert "stopped (SIGTERM): wrote" in out and "Traceback" not in err
    n = _summary_frames(out)
    assert 10 <= n < 103
    assert len(read_pose_npz(npz)) == n and read_bvh(bvh)[3].shape[0] == n  # 0 frames lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bvh", "t.npz"]


def test_two_ctrl_c_50_ms_apart_still_complete_the_outputs(tmp_path: Path):
    js, bvh = tmp_path / "c.json", tmp_path / "c.bvh"
    proc = _start("video", str(DEMO), "--out", str(bvh), "--out", str(js), "--realtime", "--no-progress", *MODEL)
    out, err = _signal_mid_run(proc, tmp_path / "c.bvh.part", [signal.SIGINT, signal.SIGINT])
    # 130; or killed by SIGINT when the second one came after the command had returned
    # (the files complete by then), as the interpreter reports a late Ctrl-C
    assert proc.returncode in (130, -signal.SIGINT), err[-3000:]
    assert "Traceback" not in err
    n = _summary_frames(out)
    assert len(json.loads(js.read_text())["frames"]) == n and read_bvh(bvh)[3].shape[0] == n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bvh", "c.json"]


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_start_up_prints_one_line(tmp_path: Path, sig: int, code: int, word: str):
    out = tmp_path / "s.npz"
    out.write_text("an earlier take")
    proc = _start("video", str(DEMO), "--out", str(out), "--no-progress", *MODEL)
    _wait_for_library(proc, "onnxruntime")  # start-up is under way, MediaPipe and the models still to load
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code and lines == [word], err[-3000:]
    assert out.read_text() == "an earlier take" and sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


@pytest.mark.parametrize("threads", [False, True], ids=["inline", "threaded"])
def test_a_signal_mid_file_still_writes_every_frame_detected(tmp_path: Path, monkeypatch, capsys, threads: bool):
    """The lifter (centred model, body, root filter) holds seconds of frames back: a signal
    stops the reading, and every frame already detected is still lifted and written, as at
    the end of a file (in-process: the signal reaches this thread's handler, as the CLI's)."""
    import os

    import realtime.estimator
    from realtime.cli import main

    detect = realtime.estimator.PoseEstimator.detect
    detected = []

    def detect_then_signal(self, frame):
        detected.append(frame.index)
        if len(detected) == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return detect(self, frame)

    monkeypatch.setattr(realtime.estimator.PoseEstimator, "detect", detect_then_signal)
    out = tmp_path / "s.npz"
    live = ["--osc", "127.0.0.1:9"] if threads else []  # a live output: detection and lifting in threads
    rc = main(["video", str(DEMO), "--out", str(out), "--no-progress", *MODEL, *live])
    stdout = capsys.readouterr().out
    assert rc == 143 and "stopped (SIGTERM): wrote" in stdout
    poses = read_pose_npz(out)
    assert 20 <= len(detected) < 103
    assert [p.index for p in poses] == detected and _summary_frames(stdout) == len(detected)
    assert sum(p.valid for p in poses) == len(detected)  # lifted, not just counted


def test_a_second_signal_while_the_held_frames_are_finished_stops_at_once(tmp_path: Path, monkeypatch, capsys):
    """The frames held back are finished after the first signal; a second one while they are
    lifted stops at once (the outputs still completed with what was written)."""
    import os

    import realtime.estimator
    import realtime.sequence
    from realtime.cli import main

    flush = realtime.sequence.SequenceLifter.flush
    flushes = []

    def signal_then_flush(self):
        flushes.append(1)
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal, while the held frames are lifted
        return flush(self)

    detect = realtime.estimator.PoseEstimator.detect
    calls = []

    def detect_then_signal(self, frame):
        calls.append(1)
        if len(calls) == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return detect(self, frame)

    monkeypatch.setattr(realtime.sequence.SequenceLifter, "flush", signal_then_flush)
    monkeypatch.setattr(realtime.estimator.PoseEstimator, "detect", detect_then_signal)
    out = tmp_path / "s.npz"
    rc = main(["video", str(DEMO), "--out", str(out), "--no-progress", *MODEL])
    assert rc == 143 and flushes == [1]
    stdout = capsys.readouterr().out
    assert "stopped (SIGTERM)" in stdout and _summary_frames(stdout) == 0  # the flush was cut short
    assert len(calls) == 20  # no frame read after the first signal
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written without a frame
