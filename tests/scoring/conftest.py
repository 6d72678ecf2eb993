from pathlib import Path

import pytest

from scoring_helpers import DATASETS


@pytest.fixture
def datasets() -> Path:
    if not DATASETS.exists():
        pytest.skip(f"datasets not found at {DATASETS}")
    return DATASETS
