"""realtime.loglimit: repeated log messages are let through a few per window and summarised."""
from __future__ import annotations

import logging

import pytest

from realtime.loglimit import LogLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_admit_burst_then_summary_in_next_window():
    lim = LogLimiter(burst=3, period_s=10)
    kind = ("x", logging.WARNING, "refused: %d")
    assert [lim.admit(kind, 0.1 * i)[0] for i in range(10)] == [True] * 3 + [False] * 7
    assert lim.admit(("x", logging.WARNING, "other"), 0.5) == (True, 0)    # kinds are independent
    assert lim.admit(kind, 10.0) == (True, 7)                              # next window reports the 7
    assert lim.admit(kind, 10.1) == (True, 0) and lim.suppressed_total == 7


def test_log_and_flush(caplog):
    clock = Clock()
    lim = LogLimiter(burst=2, period_s=5, clock=clock)
    logger = logging.getLogger("posestream.test.loglimit")
    caplog.set_level(logging.INFO, logger=logger.name)
    for i in range(1000):
        clock.t = i * 0.001
        lim.log(logger, logging.WARNING, "connection refused: %d clients already", i)
    assert [r.getMessage() for r in caplog.records] == ["connection refused: 0 clients already",
                                                       "connection refused: 1 clients already"]
    assert lim.flush() == 0                      # the window is not over yet
    clock.t = 6.0
    assert lim.flush() == 1 and lim.flush() == 0
    assert caplog.records[-1].getMessage() == ("998 similar messages suppressed in 6 s, the last: "
                                               "connection refused: 999 clients already")
    lim.log(logger, logging.DEBUG, "not emitted at INFO %d", 1)    # disabled levels count nothing
    assert len(caplog.records) == 3 and lim.suppressed_total == 998


def test_as_a_logging_filter(caplog):
    clock = Clock()
    lim = LogLimiter(burst=1, period_s=1, clock=clock)
    logger = logging.getLogger("posestream.test.loglimit.filter")
    logger.addFilter(lim)
    try:
        caplog.set_level(logging.INFO, logger=logger.name)
        for _ in range(50):
            logger.warning("stalled %s", "client")
        clock.t = 2.0
        logger.warning("stalled %s", "client")
        assert [r.getMessage() for r in caplog.records] == [
            "stalled client", "stalled client (49 similar messages suppressed in the previous 1 s)"]
    finally:
        logger.removeFilter(lim)


def test_kind_table_is_bounded():
    lim = LogLimiter(burst=1, period_s=60, max_kinds=8)
    for i in range(10_000):
        lim.admit(("x", logging.INFO, f"message {i}"), 0.0)
    assert len(lim._windows) == 8
    with pytest.raises(ValueError):
        LogLimiter(burst=0)
