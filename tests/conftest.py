"""Shared test fixtures: bundled real recordings, and ../shared when it is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MNE_LOGGING_LEVEL", "ERROR")

FIXTURES = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_recordings() -> Path:
    path = SHARED / "recordings"
    if not path.is_dir():
        pytest.skip("../shared/data/recordings is not present")
    return path


@pytest.fixture(scope="session")
def shared_tasks() -> Path:
    path = SHARED / "tasks"
    if not path.is_dir():
        pytest.skip("../shared/data/tasks is not present")
    return path
