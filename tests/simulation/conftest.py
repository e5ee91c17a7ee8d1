"""Fixtures for the controller tests (``traces_dir`` lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def shared_file(traces_dir: Path):
    """``shared_file("mahimahi/X")``: a file of the shared sets, or skip if that file is absent."""

    def get(rel: str) -> Path:
        path = traces_dir / rel
        if not path.is_file():
            pytest.skip(f"{path} not found")
        return path

    return get
