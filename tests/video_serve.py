"""`posestream video IN --out OUT --serve --port 0 ...` as a child process, for the tests that
watch it from a websocket client or a browser: the viewer URL read from its output, its
output lines collected in a thread, Ctrl-C (SIGINT) and the exit code."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from realtime.detector import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "assets" / "demo.mp4"
# The shipped lifter on ONNX Runtime: a child process then starts in ~2 s (a torch checkpoint
# would import torch and export it first).
needs_shipped_model = pytest.mark.skipif(
    not ((REPO / "models" / "base_gt.onnx").is_file() or (REPO / "models" / "base_gt.pt").is_file())
    or not DEFAULT_MODEL.is_file(),
    reason=f"needs models/base_gt.onnx (or .pt) and {DEFAULT_MODEL.name} (scripts/build_mediapipe_model.py)")


class VideoServe:
    """The running command. `wait_for(text)` returns the first output line containing it."""

    def __init__(self, out: Path, *extra: str, source: Path = DEMO, timeout_s: float = 60.0) -> None:
        argv = [sys.executable, "-m", "realtime.cli", "video", str(source), "--out", str(out), "--serve",
                "--port", "0", "--no-progress", *extra]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self.wait_for("viewer: ", timeout_s).split("viewer: ", 1)[1].strip()
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            ended = not self._reader.is_alive()
            for line in list(self.lines):
                if text in line:
                    return line
            if ended:
                raise AssertionError(f"exited (rc {self.proc.wait()}) without printing {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.output}")
            time.sleep(0.02)

    def interrupt(self, timeout_s: float = 20.0) -> int:
        """Ctrl-C; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 30.0) -> int:
        rc = self.proc.wait(timeout_s)
        self._reader.join(5)  # every line read
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "VideoServe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
