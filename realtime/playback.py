"""A video file as a stand-in camera: frames delivered in real time (optionally looped).

`posestream webcam --camera clip.mp4` and the soak/latency benchmarks use this to exercise
the live code path (newest-frame-wins, drops, latency) without a webcam. Frames come at the
file's own rate measured on the wall clock, whatever the consumer does, exactly like a
camera: if the pipeline is slower, the pipeline drops frames, the player never waits.

Timestamps and indices keep increasing across loops (MediaPipe's VIDEO mode and the
filters need strictly increasing time; sinks need unique indices).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from realtime.frames import Frame


class Pacer:
    """A wall-clock schedule: `wait(t)` sleeps until `t` seconds of media time (divided by
    `speed`) after the first call. A call late by more than `late_s` returns at once and
    restarts the schedule from it, so a slow stretch is never followed by a burst of
    catch-up frames."""

    def __init__(self, late_s: float, speed: float = 1.0) -> None:
        self.late_s = late_s
        self.speed = speed
        self._t0: float | None = None

    def wait(self, t: float) -> None:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now - t / self.speed
        delay = self._t0 + t / self.speed - now
        if delay > 0:
            time.sleep(delay)
        elif delay < -self.late_s:
            self._t0 -= delay


class RealtimePlayback:
    """Iterable of `Frame`s from `open_frames()` (a fresh iterable per loop, e.g. a
    `VideoFileSource`), paced at `fps` x `speed` on the wall clock.

    loop: replay from the start when the file ends (stop after `max_frames` in all).
    Frames are renumbered 0, 1, 2, ... across loops with timestamps index / fps.
    `close()` stops the iteration and closes the current underlying source."""

    def __init__(self, open_frames: Callable[[], Iterable[Frame]], fps: float, loop: bool = False,
                 speed: float = 1.0, max_frames: int | None = None) -> None:
        if fps <= 0 or speed <= 0:
            raise ValueError(f"fps and speed must be positive, got {fps}, {speed}")
        self.open_frames = open_frames
        self.fps = float(fps)
        self.loop = loop
        self.speed = float(speed)
        self.max_frames = max_frames
        self.loops = 0  # completed replays (loop=True)
        self._current: Iterable[Frame] | None = None
        self._closed = False

    @staticmethod
    def from_video(path: str | Path, loop: bool = False, speed: float = 1.0,
                   max_frames: int | None = None) -> "RealtimePlayback":
        """A video file as a camera (`realtime.sources.VideoFileSource`; UserError if unreadable)."""
        from realtime.sources import VideoFileSource

        probe = VideoFileSource(path)  # fail now on a bad file, and learn its frame rate
        fps = probe.fps
        first = [probe]

        def open_frames() -> Iterable[Frame]:
            return first.pop() if first else VideoFileSource(path)

        return RealtimePlayback(open_frames, fps, loop=loop, speed=speed, max_frames=max_frames)

    def close(self) -> None:
        self._closed = True
        close = getattr(self._current, "close", None)
        if callable(close):
            close()

    def __iter__(self) -> Iterator[Frame]:
        pacer = Pacer(late_s=1.0 / (self.fps * self.speed), speed=self.speed)
        n = 0
        while not self._closed and (self.max_frames is None or n < self.max_frames):
            self._current = self.open_frames()
            got = 0
            try:
                for frame in self._current:
                    if self._closed or (self.max_frames is not None and n >= self.max_frames):
                        break
                    # Sleep until this frame's slot. A frame late by more than a period (slow
                    # decoding) goes out at once and the schedule restarts from it: a camera
                    # never sends a burst of old frames to catch up.
                    pacer.wait(n / self.fps)
                    yield Frame(n, n / self.fps, frame.image)
                    n += 1
                    got += 1
            finally:
                close = getattr(self._current, "close", None)
                if callable(close):
                    close()
            if not self.loop or got == 0 or self._closed or (self.max_frames is not None and n >= self.max_frames):
                break
            self.loops += 1  # the file ended: play it again
