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


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory) -> dict:
    """A REAL fine-tuned model package, built once per session (~30 s on 2 cores).

    A tiny tokenizer package (k-means codebooks on bundled windows), a random backbone package of preset
    ``tiny``, and a ``probe`` fitted for 2 epochs through ``python -m finetune fit`` (in-process) on
    tests/data/demo_task.csv (2 s windows labelled ``biosemi`` = test.edf or ``natus`` = test_subsecond.edf),
    exported with ``python -m finetune export``. Returns a dict: ``registry`` (Path), ``name`` ("demo"),
    ``version`` ("1"), ``package`` (registry/demo/1), ``run`` (the fit run directory), ``tokenizer`` and
    ``backbone`` (package dirs), ``task`` (the CSV). Treat it as read-only (copy it to change it).
    """
    from finetune_support import build_registry

    return build_registry(tmp_path_factory.mktemp("model_registry"))
