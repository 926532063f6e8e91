"""The threaded live pipeline: capture -> 2D detection -> lifting (+ post-processing) -> caller.

Each step runs in its own thread so that reading the next frame, detecting 2D joints in the
current one and lifting the previous one overlap; on 2 cores MediaPipe (which releases the
GIL) then sets the frame rate alone. Threads talk through bounded queues, so memory and
latency stay bounded whatever the speed of each step:

    source --capture thread--> [slot] --detect thread--> [q] --lift thread--> [q] --> caller

Live sources (`live=True`, a webcam or a video played in real time): the capture thread
never waits. The slot before detection holds one frame and the newest frame wins; a frame
replaced before detection took it is *dropped* and counted (`PipelineStats.dropped`).
Latency then stays at about one detection time instead of growing without bound.
Files (`live=False`): every frame is processed, in order. The capture thread blocks while
the queue is full (back-pressure), so nothing is dropped and nothing piles up.

Stages are injectable callables (`Stage(name, fn)`): the first takes a `realtime.frames.Frame`,
each later one takes the previous one's return value, and the last must return a
`PoseFrame`. A group of stages given as a tuple runs in one thread (lift, trajectory and
smoothing are each well under a millisecond: a thread each would only add hand-offs).
Tests pass fakes (a detector that sleeps, a stage that raises).

A `StreamStage(name, push, flush)` answers each input with 0..n outputs: a centred temporal
lifter holds a frame back until the frames after it have arrived, a smoother until its lag
has passed. `push(item)` returns the outputs that became ready (in frame order), `flush()`
those still held when the stream ends (called once, at the end sentinel, before it travels
on). Every input must be answered exactly once, in order, by push or flush; an output names
the input it answers by its `index` (Frame.index, carried by every payload), which is how the
pipeline keeps each frame's capture time and timings. A held frame's latency includes the
wait. `run_inline(items, steps)` runs the same steps without threads (files without live
outputs).

Timings, per frame, into `PoseFrame.timings_ms` (milliseconds): "capture" (reading the frame
from the source), one entry per stage name, and "latency" = capture-to-output: from the
moment the source returned the frame to the moment the caller receives the PoseFrame
(queueing included; a camera's own exposure/driver delay before that is not visible here).

Shutdown, in every case without hung threads (workers poll a stop event at least every
POLL_S; joins are bounded by `join_timeout_s`, and a thread stuck inside a stage's own call,
say a blocking camera read, is reported and left as a daemon rather than waited on forever):
  * end of source: the capture thread sends an end sentinel down the queues; iteration ends
    after the last frame;
  * a stage (or the source) raises: the threads upstream of it stop, the frames that had
    already passed it are still delivered, then the caller's iteration re-raises the
    exception as `StageError` (the original as __cause__, stage and frame in the message;
    `engines.errors.UserError`, a user-input problem such as an unreadable file, passes
    through unchanged);
  * the caller stops (Ctrl-C raises KeyboardInterrupt in the main thread while it waits on
    the output; breaking out of the loop, `close()`, or leaving the `with` block): the stop
    event ends every thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from engines.errors import UserError
from realtime.frames import Frame, PoseFrame

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often blocked threads look at the stop event
LATENCY_WINDOW = 1000  # frames kept for latency percentiles and the recent frame rate


@dataclass(frozen=True)
class Stage:
    """One named step: `fn(previous_output) -> output`."""

    name: str
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class StreamStage:
    """A step with 0..n outputs per input: `push(item) -> outputs`, `flush() -> outputs` at the
    end of the stream (module docstring)."""

    name: str
    push: Callable[[Any], Iterable[Any]]
    flush: Callable[[], Iterable[Any]]


AnyStage = Stage | StreamStage
StageGroup = AnyStage | tuple[AnyStage, ...] | list[AnyStage]


class StageError(RuntimeError):
    """A stage or the source raised; the original exception is `__cause__`."""

    def __init__(self, stage: str, frame_index: int | None, cause: BaseException) -> None:
        """frame_index: the frame the stage failed on; for the source, the last frame it gave
        (it failed reading the one after)."""
        where = "" if frame_index is None else f" {'after' if stage == 'source' else 'on'} frame {frame_index}"
        super().__init__(f"stage {stage!r} failed{where}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.frame_index = frame_index


@dataclass(frozen=True)
class PipelineStats:
    """A snapshot of the counters. Frame rates are outputs per second; `recent_fps` over the
    last `LATENCY_WINDOW` outputs (what the status line shows), `fps` since the first frame."""

    captured: int
    dropped: int
    processed: int
    elapsed_s: float
    fps: float
    recent_fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_max: float

    def status_line(self) -> str:
        return (f"{self.recent_fps:5.1f} fps | latency p50 {self.latency_ms_p50:5.1f} ms "
                f"p95 {self.latency_ms_p95:5.1f} ms | frames {self.processed} | dropped {self.dropped}")


class _Counters:
    """Thread-safe counters behind PipelineStats."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.captured = 0
        self.dropped = 0
        self.processed = 0
        self.t_first: float | None = None
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.out_times: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def snapshot(self) -> PipelineStats:
        with self.lock:
            now = time.perf_counter()
            elapsed = now - self.t_first if self.t_first is not None else 0.0
            lat = np.array(self.latencies) if self.latencies else np.full(1, np.nan)
            times = list(self.out_times)
            recent = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            return PipelineStats(self.captured, self.dropped, self.processed, elapsed,
                                 self.processed / elapsed if elapsed > 0 else 0.0, recent,
                                 float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), float(np.max(lat)))


class _Packet:
    """A frame in flight: the current payload plus what the pipeline measures about it."""

    __slots__ = ("index", "t_capture", "payload", "timings")

    def __init__(self, index: int, t_capture: float, payload: Any, timings: dict[str, float]) -> None:
        self.index = index
        self.t_capture = t_capture
        self.payload = payload
        self.timings = timings


_END = object()  # sentinel: the source is exhausted, sent down every queue


class _Failed(Exception):
    """A stage raised inside a worker: which stage, on which frame, and the exception."""

    def __init__(self, stage: str, index: Any, cause: BaseException) -> None:
        super().__init__(stage)
        self.stage, self.index, self.cause = stage, index, cause


class _LatestSlot:
    """A one-item mailbox where the newest item wins (live capture -> detection).
    `put` never blocks; it returns True if it replaced (dropped) an item not yet taken.
    The end sentinel is never overwritten, so the end of a source is never lost."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False

    def put(self, item: Any) -> bool:
        with self._cond:
            dropped = self._full
            if self._full and self._item is _END:
                return False
            self._item, self._full = item, True
            self._cond.notify()
            return dropped

    def get(self, timeout: float) -> Any:
        """The item, or raises queue.Empty after `timeout` seconds."""
        with self._cond:
            if not self._full and not self._cond.wait_for(lambda: self._full, timeout):
                raise queue.Empty
            item, self._item, self._full = self._item, None, False
            return item


def _as_group(group: StageGroup) -> tuple[AnyStage, ...]:
    stages = (group,) if isinstance(group, (Stage, StreamStage)) else tuple(group)
    if not stages or not all(isinstance(s, (Stage, StreamStage)) for s in stages):
        raise TypeError(f"a pipeline step must be a Stage or a non-empty tuple of Stages, got {group!r}")
    return stages


def _through(stages: Sequence[AnyStage], item: Any) -> Iterator[Any]:
    """`item` through `stages` in turn, in this thread: what comes out of the last one."""
    if not stages:
        yield item
        return
    first, rest = stages[0], stages[1:]
    outs = first.push(item) if isinstance(first, StreamStage) else (first.fn(item),)
    for out in outs:
        yield from _through(rest, out)


def run_inline(items: Iterable[Any], steps: Sequence[StageGroup]) -> Iterator[Any]:
    """The steps applied in the caller's thread, item after item, stream stages flushed at
    the end: the same outputs, in the same order, as a file-mode Pipeline."""
    stages = [stage for group in steps for stage in _as_group(group)]
    for item in items:
        yield from _through(stages, item)
    for j, stage in enumerate(stages):
        if isinstance(stage, StreamStage):
            for out in stage.flush():
                yield from _through(stages[j + 1:], out)


class Pipeline:
    """Runs `source` through `steps` in threads; iterate to receive the PoseFrames.

    source: an iterable of `Frame`s, consumed in the capture thread (its `close()`, if it has
            one, is called there at the end, so a camera is released by the thread using it).
    steps:  one thread per element; an element is a `Stage` or a tuple of Stages run in turn.
    live:   newest-frame-wins with drop counting (True) or every frame in order (False).
    queue_size: capacity of each queue between threads (>= 1). Live mode uses 1 after
            detection, since a queue only adds latency when the next stage is the faster.
    join_timeout_s: how long `close()` waits for each thread.
    stall_timeout_s: if set, no output for this long ends the iteration with a StageError
            naming the step that is stuck (a camera that stopped delivering, a wedged
            stage), instead of waiting forever. For live use; leave None for files.

    Single use: iterate once (or call `run()` to consume everything, returning the stats).
    """

    def __init__(self, source: Iterable[Frame], steps: Sequence[StageGroup], *, live: bool,
                 queue_size: int = 4, join_timeout_s: float = 5.0, stall_timeout_s: float | None = None) -> None:
        if not steps:
            raise TypeError("a pipeline needs at least one stage")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self.groups = [_as_group(g) for g in steps]
        self.live = live
        self.join_timeout_s = join_timeout_s
        self.stall_timeout_s = stall_timeout_s
        # What each thread is doing (name, since perf_counter), for the stall message; plain
        # assignments of tuples, read racily on purpose (only for a diagnostic).
        self._busy: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()  # close(): every thread ends now
        # halts[0] stops the capture thread, halts[i + 1] group i's thread: a failed stage
        # halts only the threads upstream of it, so what already passed it still drains to
        # the caller (no processed frame is lost on a failure).
        self._halts = [threading.Event() for _ in range(len(self.groups) + 1)]
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._counters = _Counters()
        size = 1 if live else queue_size
        # inputs[i] feeds group i; the last queue feeds the caller.
        self._first: _LatestSlot | queue.Queue = _LatestSlot() if live else queue.Queue(size)
        self._queues: list[_LatestSlot | queue.Queue] = [self._first] + [queue.Queue(size) for _ in self.groups]
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        self.hung_threads: list[str] = []  # names of threads that outlived join_timeout_s

    # ---- public -------------------------------------------------------------------------
    @property
    def stats(self) -> PipelineStats:
        return self._counters.snapshot()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[PoseFrame]:
        if self._started:
            raise RuntimeError("a Pipeline can be iterated only once")
        self._start()
        out = self._queues[-1]
        last = time.perf_counter()
        try:
            while True:
                try:
                    item = out.get(timeout=POLL_S)
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    if self.stall_timeout_s is not None and time.perf_counter() - last > self.stall_timeout_s:
                        self._stalled(time.perf_counter() - last)
                        break
                    continue
                if item is _END:
                    break
                yield self._finish(item)
                last = time.perf_counter()
        finally:
            self.close()
        self._raise_error()

    def run(self, on_frame: Callable[[PoseFrame], None] | None = None) -> PipelineStats:
        """Consume every output (calling `on_frame` on each, in the caller's thread); return
        the final stats. Errors re-raise as for iteration."""
        for pf in self:
            if on_frame is not None:
                on_frame(pf)
        return self.stats

    def close(self) -> None:
        """Stop every thread and wait for them (bounded). Idempotent, safe from any thread
        except the pipeline's own workers."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for h in self._halts:
            h.set()
        deadline = time.monotonic() + self.join_timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self.hung_threads.append(t.name)
        if self.hung_threads:
            log.warning("pipeline threads still busy after %.1f s (left as daemons): %s",
                        self.join_timeout_s, ", ".join(self.hung_threads))

    # ---- threads ------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        self._threads.append(threading.Thread(target=self._capture, name="posestream-capture", daemon=True))
        for i, group in enumerate(self.groups):
            name = "posestream-" + "+".join(s.name for s in group)
            self._threads.append(threading.Thread(target=self._work, args=(i, group), name=name, daemon=True))
        for t in self._threads:
            t.start()

    def _fail(self, stage: str, index: int | None, exc: BaseException, upto: int = 0) -> None:
        """Record the first failure and halt threads 0..upto-1 (those upstream of the failed
        one); the failed thread itself then sends the end sentinel downstream."""
        with self._error_lock:
            if self._error is None:
                self._error = exc if isinstance(exc, UserError) else StageError(stage, index, exc)
                if not isinstance(exc, UserError):
                    self._error.__cause__ = exc
                log.debug("pipeline stopping: %s", self._error, exc_info=exc)
        for h in self._halts[:upto]:
            h.set()

    def _stalled(self, waited_s: float) -> None:
        now = time.perf_counter()
        busy = sorted(((now - t0, what) for what, t0 in self._busy.values()), reverse=True)
        where = busy[0][1] if busy else "source"
        detail = ", ".join(f"{w} for {d:.1f} s" for d, w in busy) or "nothing running"
        exc = TimeoutError(f"no output for {waited_s:.1f} s (busy: {detail})")
        self._fail(where, None, exc, upto=len(self._halts))

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _put(self, q: _LatestSlot | queue.Queue, item: Any, halt: threading.Event) -> bool:
        """Blocking put that gives up when the pipeline closes or this thread is halted.
        Returns False if it gave up."""
        if isinstance(q, _LatestSlot):
            if q.put(item):  # replaced a frame detection had not taken yet
                with self._counters.lock:
                    self._counters.dropped += 1
            return True
        while not (self._stop.is_set() or halt.is_set()):
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _capture(self) -> None:
        it = None
        index = None
        halt = self._halts[0]
        try:
            it = iter(self.source)
            while not (self._stop.is_set() or halt.is_set()):
                t0 = time.perf_counter()
                self._busy["capture"] = ("source", t0)
                try:
                    frame = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                self._busy.pop("capture", None)
                index = getattr(frame, "index", None)
                with self._counters.lock:
                    self._counters.captured += 1
                    if self._counters.t_first is None:
                        self._counters.t_first = t1
                if not self._put(self._first, _Packet(index, t1, frame, {"capture": (t1 - t0) * 1e3}), halt):
                    return
        except BaseException as exc:  # noqa: BLE001 - any failure must reach the caller
            # A source failing mid-stream (truncated file, camera unplugged): the frames
            # read before it are still processed and delivered, then the error is raised.
            self._fail("source", index, exc)
        finally:
            self._put(self._first, _END, halt)
            for obj in (it, self.source):
                close = getattr(obj, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception as exc:  # noqa: BLE001
                        log.warning("closing the source failed: %s", exc)

    def _work(self, i: int, group: tuple[AnyStage, ...]) -> None:
        inq, outq = self._queues[i], self._queues[i + 1]
        halt = self._halts[i + 1]
        # Per stream stage of the group: the packets it holds, by frame index.
        held: list[dict[Any, _Packet]] = [{} for _ in group]
        while not (self._stop.is_set() or halt.is_set()):
            try:
                pkt = inq.get(timeout=POLL_S)
            except queue.Empty:
                continue
            try:
                if pkt is _END:
                    for j, stage in enumerate(group):  # flush in order: j's leftovers pass j + 1
                        if isinstance(stage, StreamStage):
                            flushed = self._answers(stage, held[j], self._timed(stage, None, stage.flush))
                            for out in self._run(group, j + 1, flushed, held):
                                if not self._put(outq, out, halt):
                                    return
                    if any(held):
                        log.warning("pipeline: %d frame(s) never answered by a stream stage",
                                    sum(len(h) for h in held))
                    self._put(outq, _END, halt)
                    return
                for out in self._run(group, 0, [pkt], held):
                    if not self._put(outq, out, halt):
                        return
            except _Failed as failed:
                self._fail(failed.stage, failed.index, failed.cause, upto=i + 1)
                self._put(outq, _END, halt)
                return

    def _timed(self, stage: AnyStage, pkt: _Packet | None, call: Callable[..., Any], *args: Any) -> Any:
        """call(*args) timed into pkt's timings (if any); a failure becomes _Failed."""
        t0 = time.perf_counter()
        self._busy[stage.name] = (stage.name, t0)
        try:
            result = call(*args)
            if isinstance(stage, StreamStage):
                result = list(result)
        except BaseException as exc:  # noqa: BLE001
            raise _Failed(stage.name, pkt.index if pkt is not None else None, exc) from exc
        if pkt is not None:
            pkt.timings[stage.name] = (time.perf_counter() - t0) * 1e3
        self._busy.pop(stage.name, None)
        return result

    @staticmethod
    def _answers(stage: StreamStage, held: dict[Any, _Packet], outputs: list[Any]) -> list[_Packet]:
        """The held packets that a stream stage's outputs answer, carrying those outputs."""
        pkts = []
        for out in outputs:
            index = getattr(out, "index", None)
            if index not in held:
                raise _Failed(stage.name, index, TypeError(
                    f"stream stage output for frame {index} answers no frame it holds"))
            p = held.pop(index)
            p.payload = out
            pkts.append(p)
        return pkts

    def _run(self, group: tuple[AnyStage, ...], start: int, pkts: list[_Packet],
             held: list[dict[Any, _Packet]]) -> list[_Packet]:
        """Packets through group[start:]; what comes out of the group's last stage."""
        for j in range(start, len(group)):
            stage = group[j]
            nxt: list[_Packet] = []
            for pkt in pkts:
                if isinstance(stage, StreamStage):
                    held[j][pkt.index] = pkt
                    outs = self._timed(stage, pkt, stage.push, pkt.payload)
                    nxt += self._answers(stage, held[j], outs)
                else:
                    pkt.payload = self._timed(stage, pkt, stage.fn, pkt.payload)
                    nxt.append(pkt)
            pkts = nxt
        return pkts

    def _finish(self, pkt: _Packet) -> PoseFrame:
        """Caller thread: stamp the timings into the PoseFrame and count it."""
        pf = pkt.payload
        if not isinstance(pf, PoseFrame):
            exc = TypeError(f"the last stage must return a PoseFrame, got {type(pf).__name__}")
            self._fail(self.groups[-1][-1].name, pkt.index, exc, upto=len(self._halts))
            self._raise_error()
        now = time.perf_counter()
        latency = (now - pkt.t_capture) * 1e3
        with self._counters.lock:
            self._counters.processed += 1
            self._counters.latencies.append(latency)
            self._counters.out_times.append(now)
        return replace(pf, timings_ms={**pf.timings_ms, **pkt.timings, "latency": latency})
