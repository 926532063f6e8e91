"""Shared fixtures: data paths (tests needing ../shared/data skip with a reason when absent)."""
from __future__ import annotations

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
