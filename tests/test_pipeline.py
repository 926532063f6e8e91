"""Threaded pipeline with fake stages: ordering, newest-frame-wins, failures, stopping."""
from __future__ import annotations

import _thread
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from engines.errors import UserError
from realtime.frames import Frame, PoseFrame
from realtime.pipeline import Pipeline, Stage, StageError, StreamStage, run_inline

SIZE = (64, 48)


def frames(n: int | None, fps: float | None = None, fail_at: int | None = None, exc: BaseException | None = None):
    """A fake source: n tiny frames (None = endless), paced at fps in real time if given."""
    t0 = time.perf_counter()
    i = 0
    while n is None or i < n:
        if fail_at is not None and i == fail_at:
            raise exc or OSError("truncated video: cannot decode frame")
        if fps:
            time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
        yield Frame(i, i / (fps or 30.0), np.full((SIZE[1], SIZE[0], 3), i % 256, np.uint8))
        i += 1


def fake_detect(delay_s: float = 0.0):
    def detect(frame: Frame) -> tuple[Frame, np.ndarray | None]:
        if delay_s:
            time.sleep(delay_s)
        uv = None if frame.index % 10 == 7 else np.full((17, 2), float(frame.index), np.float32)  # no person on *7
        return frame, uv
    return detect


def fake_lift(item: tuple[Frame, np.ndarray | None]) -> PoseFrame:
    frame, uv = item
    if uv is None:
        return PoseFrame.empty(frame.index, frame.timestamp_s, SIZE)
    return PoseFrame(frame.index, frame.timestamp_s, True, np.zeros((17, 3), np.float32),
                     np.full(3, np.nan, np.float32), uv, np.ones(17, np.float32), SIZE)


def _threads_named() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("posestream-")]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    deadline = time.monotonic() + 2.0
    while _threads_named() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _threads_named(), f"threads left running: {_threads_named()}"


def test_file_mode_processes_every_frame_in_order_with_timings():
    p = Pipeline(frames(60), [Stage("detect", fake_detect(0.002)), Stage("lift", fake_lift)], live=False)
    out = list(p)
    assert [f.index for f in out] == list(range(60))
    assert [f.valid for f in out] == [i % 10 != 7 for i in range(60)]  # no-person frames kept
    for f in out:
        assert set(f.timings_ms) >= {"capture", "detect", "lift", "latency"}
        assert f.timings_ms["detect"] >= 1.5
        assert f.timings_ms["latency"] >= f.timings_ms["detect"] + f.timings_ms["lift"]
    st = p.stats
    assert (st.captured, st.processed, st.dropped) == (60, 60, 0)
    assert st.latency_ms_p95 >= st.latency_ms_p50 > 0


def test_file_mode_backpressure_slow_stage_drops_nothing():
    p = Pipeline(frames(20), [Stage("detect", fake_detect(0.01)), Stage("lift", fake_lift)], live=False, queue_size=2)
    assert [f.index for f in p] == list(range(20))
    assert p.stats.dropped == 0


def test_live_mode_newest_frame_wins_and_drops_are_counted():
    # Camera at 200 fps, detector at ~40 fps: most frames must be dropped, latency bounded.
    p = Pipeline(frames(200, fps=200.0), [Stage("detect", fake_detect(0.025)), Stage("lift", fake_lift)], live=True)
    out = list(p)
    idx = [f.index for f in out]
    st = p.stats
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert st.dropped > 100
    assert st.captured == 200 == st.processed + st.dropped
    # Latency stays near one detection (25 ms) plus one frame wait: never the backlog of
    # a queue (which would be ~1 s by the end). Generous bound: the CPU is shared.
    assert st.latency_ms_p50 < 250.0


def test_grouped_stages_run_in_one_thread_with_separate_timings():
    seen = []

    def post(pf: PoseFrame) -> PoseFrame:
        seen.append(threading.current_thread().name)
        return pf

    p = Pipeline(frames(5), [Stage("detect", fake_detect()), (Stage("lift", fake_lift), Stage("smooth", post))],
                 live=False)
    out = list(p)
    assert len(out) == 5 and set(seen) == {"posestream-lift+smooth"}
    assert {"lift", "smooth"} <= set(out[0].timings_ms)


class HoldBack:
    """A stream stage that answers each frame `delay` frames later (a centred model's wait),
    with the end of the stream flushing the rest; `fail_in_flush` raises there instead."""

    def __init__(self, delay: int, fail_in_flush: bool = False) -> None:
        self.delay, self.fail_in_flush = delay, fail_in_flush
        self.held: list = []

    def push(self, item):
        self.held.append(fake_lift(item))
        out, self.held = self.held[:-self.delay], self.held[-self.delay:]
        return out

    def flush(self):
        if self.fail_in_flush:
            raise RuntimeError("flush failed")
        out, self.held = self.held, []
        return out


def _tag(pf: PoseFrame) -> PoseFrame:
    return replace(pf, timings_ms={**pf.timings_ms, "tagged": 1.0})


def test_stream_stage_holds_frames_and_flushes_them_at_the_end():
    """0..n outputs per input: every frame answered once, in order, with its own capture
    time (the wait counts in its latency), through the rest of its group; the inline run
    gives the same frames."""
    hb = HoldBack(5)
    p = Pipeline(frames(40), [Stage("detect", fake_detect()), (StreamStage("lift", hb.push, hb.flush),
                                                                Stage("tag", _tag))], live=False)
    out = list(p)
    assert [f.index for f in out] == list(range(40))
    assert all("tagged" in f.timings_ms and "lift" in f.timings_ms for f in out)
    assert p.stats.processed == 40
    hb2 = HoldBack(5)
    inline = list(run_inline(frames(40), [Stage("detect", fake_detect()),
                                          (StreamStage("lift", hb2.push, hb2.flush), Stage("tag", _tag))]))
    assert [(f.index, f.valid) for f in inline] == [(f.index, f.valid) for f in out]


def test_stream_stage_failures_are_reported_after_what_was_answered():
    hb = HoldBack(3, fail_in_flush=True)
    got = []
    with pytest.raises(StageError, match="stage 'lift' failed: RuntimeError: flush failed"):
        for f in Pipeline(frames(10), [Stage("detect", fake_detect()), StreamStage("lift", hb.push, hb.flush)],
                          live=False):
            got.append(f.index)
    assert got == list(range(7))

    def stranger(item):  # answers a frame it was never given
        return [replace(fake_lift(item), index=1000)]

    with pytest.raises(StageError, match="answers no frame it holds"):
        list(Pipeline(frames(3), [Stage("detect", fake_detect()), StreamStage("lift", stranger, list)], live=False))


def test_failing_stage_stops_everything_and_reraises():
    def lift(item):
        if item[0].index == 5:
            raise ValueError("boom")
        return fake_lift(item)

    got = []
    with pytest.raises(StageError, match=r"stage 'lift' failed on frame 5: ValueError: boom") as ei:
        for f in Pipeline(frames(None), [Stage("detect", fake_detect()), Stage("lift", lift)], live=False):
            got.append(f.index)
    assert isinstance(ei.value.__cause__, ValueError)
    assert got == [0, 1, 2, 3, 4]  # everything finished before the failure is delivered


def test_source_error_mid_stream_is_reported_after_earlier_frames():
    got = []
    with pytest.raises(StageError, match="stage .source. failed after frame 11: OSError") as ei:
        for f in Pipeline(frames(50, fail_at=12), [Stage("detect", fake_detect()), Stage("lift", fake_lift)],
                          live=False):
            got.append(f.index)
    assert got == list(range(12)) and isinstance(ei.value.__cause__, OSError)


def test_user_error_passes_through_unchanged():
    with pytest.raises(UserError, match="webcam stopped"):
        list(Pipeline(frames(5, fail_at=2, exc=UserError("webcam stopped")), [Stage("lift", lambda f: fake_lift((f, None)))],
                      live=True))


def test_last_stage_must_return_poseframe():
    with pytest.raises(StageError, match="must return a PoseFrame"):
        list(Pipeline(frames(3), [Stage("detect", fake_detect())], live=False))


class ClosingSource:
    """Endless source that records being closed (a camera must be released)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self):
        return frames(None, fps=100.0)

    def close(self) -> None:
        self.closed.set()


def test_caller_break_stops_threads_and_closes_source():
    src = ClosingSource()
    p = Pipeline(src, [Stage("detect", fake_detect(0.005)), Stage("lift", fake_lift)], live=True)
    for f in p:
        if f.index >= 10:
            break
    assert src.closed.wait(2.0)
    assert not p.hung_threads


def test_ctrl_c_while_waiting_stops_cleanly():
    """SIGINT arrives in the main thread while it blocks on the output queue."""
    src = ClosingSource()
    p = Pipeline(src, [Stage("detect", fake_detect(0.01)), Stage("lift", fake_lift)], live=True)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    n = 0
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in p:
            n += 1
    assert time.monotonic() - t0 < 3.0
    assert n > 0 and src.closed.wait(2.0) and not p.hung_threads


def test_stage_stuck_forever_does_not_hang_close():
    release = threading.Event()

    def stuck(frame):
        release.wait(30)  # a wedged driver call: ignores the stop event
        return fake_lift((frame, None))

    p = Pipeline(frames(None, fps=50.0), [Stage("stuck", stuck)], live=True, join_timeout_s=0.3)
    it = iter(p)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert time.monotonic() - t0 < 2.0
    assert p.hung_threads == ["posestream-stuck"]
    release.set()  # let the daemon thread finish for the leak check


def test_bad_construction():
    with pytest.raises(TypeError):
        Pipeline(frames(1), [], live=False)
    with pytest.raises(TypeError):
        Pipeline(frames(1), [lambda f: f], live=False)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Pipeline(frames(1), [Stage("x", fake_lift)], live=False, queue_size=0)
    p = Pipeline(frames(1), [Stage("lift", lambda f: fake_lift((f, None)))], live=False)
    list(p)
    with pytest.raises(RuntimeError, match="only once"):
        list(p)


def test_stall_timeout_names_the_stuck_step():
    """A camera that stops delivering (read blocks forever): the caller gets a clear error
    instead of waiting forever."""
    release = threading.Event()

    def stuck_camera():
        yield from frames(3)
        release.wait(30)  # a driver read that never returns
        yield from frames(1)

    got = []
    t0 = time.monotonic()
    p = Pipeline(stuck_camera(), [Stage("detect", fake_detect()), Stage("lift", fake_lift)], live=True,
                 stall_timeout_s=0.5, join_timeout_s=0.2)
    try:
        with pytest.raises(StageError, match=r"stage 'source' failed: TimeoutError: no output for 0\.\d s "
                                             r"\(busy: source for"):
            for f in p:
                got.append(f.index)
        assert got and got[-1] == 2 and time.monotonic() - t0 < 3.0  # newest of the 3 frames delivered
        assert p.hung_threads == ["posestream-capture"]
    finally:
        release.set()
