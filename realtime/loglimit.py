"""A log-volume limiter: repeated messages of one kind are let through a few at a time and the
rest are counted and summarised ("N similar messages suppressed"), so a client storm (hundreds
of refused connections a second) costs a few lines a minute instead of megabytes.

A *kind* is (logger name, level, message template): every "connection refused: %d clients"
line is one kind whatever its arguments. Per kind, at most `burst` messages pass in each window
of `period_s` seconds; the first message of the next window carries the count suppressed in the
last one, and `flush()` reports counts whose window is over without waiting for one.

    limiter = LogLimiter(burst=5, period_s=30)
    limiter.log(log, logging.WARNING, "connection refused: %d clients", n)   # per owner
    logging.getLogger("noisy.library").addFilter(LogLimiter())             # or as a filter
    limiter.flush()                                                         # now and then

The decision (`admit`) takes the time as an argument and keeps no other state than a bounded
table of kinds (`max_kinds`, least recently seen forgotten first), so it is testable without
a clock and cannot grow with the number of distinct messages.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

Kind = tuple[str, int, str]  # logger name, level, message template


@dataclass
class _Window:
    start: float
    passed: int = 1
    suppressed: int = 0
    last: tuple[Any, ...] = ()      # the arguments of the last suppressed message (for the summary)


class LogLimiter(logging.Filter):
    """At most `burst` messages of each kind per `period_s` seconds (see the module doc).
    `clock`: monotonic seconds, injectable for tests."""

    def __init__(self, burst: int = 5, period_s: float = 30.0, max_kinds: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if burst < 1 or not period_s > 0 or max_kinds < 1:
            raise ValueError("LogLimiter needs burst >= 1, period_s > 0 and max_kinds >= 1")
        self.burst, self.period_s, self.max_kinds, self.clock = burst, float(period_s), max_kinds, clock
        self._windows: OrderedDict[Kind, _Window] = OrderedDict()
        self.suppressed_total = 0

    def admit(self, kind: Kind, now: float, args: tuple[Any, ...] = ()) -> tuple[bool, int]:
        """(whether a message of `kind` at `now` passes, messages of that kind suppressed in
        the previous window that it should report). `args`: the message's arguments, kept
        (unformatted) from the last suppressed one to show it in the summary."""
        w = self._windows.get(kind)
        if w is None or now - w.start >= self.period_s:
            self._windows[kind] = _Window(now)
            self._windows.move_to_end(kind)
            while len(self._windows) > self.max_kinds:
                self._windows.popitem(last=False)
            return True, (w.suppressed if w is not None else 0)
        self._windows.move_to_end(kind)
        if w.passed < self.burst:
            w.passed += 1
            return True, 0
        w.suppressed += 1
        w.last = args
        self.suppressed_total += 1
        return False, 0

    @staticmethod
    def _note(suppressed: int, period_s: float) -> str:
        return f" ({suppressed} similar messages suppressed in the previous {period_s:g} s)"

    def filter(self, record: logging.LogRecord) -> bool:
        """logging.Filter: pass or drop `record`; a passing one may carry the suppressed count."""
        args = record.args if isinstance(record.args, tuple) else ()
        ok, suppressed = self.admit((record.name, record.levelno, str(record.msg)), self.clock(), args)
        if ok and suppressed:
            record.msg = str(record.msg) + self._note(suppressed, self.period_s)
        return ok

    def log(self, logger: logging.Logger, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        """`logger.log(level, msg, *args, **kwargs)` if this kind is under its limit (and the
        logger would emit it at all: disabled levels count nothing)."""
        if not logger.isEnabledFor(level):
            return
        ok, suppressed = self.admit((logger.name, level, msg), self.clock(), args)
        if ok:
            logger.log(level, msg + (self._note(suppressed, self.period_s) if suppressed else ""), *args, **kwargs)

    def flush(self, force: bool = False) -> int:
        """Report every kind whose window is over (all of them with `force`, e.g. at shutdown)
        with messages suppressed, one line each (with the last of them); returns the number of
        lines written."""
        now = self.clock()
        lines = 0
        for (name, level, msg), w in list(self._windows.items()):
            if w.suppressed and (force or now - w.start >= self.period_s):
                try:
                    last = msg % w.last if w.last else msg
                except (TypeError, ValueError):
                    last = msg
                logging.getLogger(name).log(level, "%d similar messages suppressed in %.0f s, the last: %s",
                                            w.suppressed, now - w.start, last[:200])
                w.suppressed = 0
                lines += 1
        return lines
