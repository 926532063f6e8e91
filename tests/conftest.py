"""Shared fixtures: data paths (tests needing ../shared/data skip with a reason when absent)."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the shared data folder next to the checkout), which is absent")
    return p


@pytest.fixture(scope="session")
def h36m_val() -> Path:
    return data_path("h36m", "h36m_val.npz")


@pytest.fixture(scope="session")
def h36m_train() -> Path:
    return data_path("h36m", "h36m_train.npz")


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in every test, also when the suite was started with SIGINT
    ignored (a background job, `nohup ... &`): `_thread.interrupt_main` does nothing then, and
    the commands the tests start inherit the ignored signal, so the Ctrl-C tests would wait
    forever. A Python handler is reset to the default in a child process, an ignored one is not."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
