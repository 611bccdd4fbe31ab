"""Shared test fixtures. ``shared/`` (reference tensors, real AASCE copy) lies beside the repo root."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
AASCE = SHARED / "aasce" / "boostnet_labeldata"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def require(path: Path, what: str) -> Path:
    """Skip the calling test with a stated reason when ``path`` is absent."""
    if not path.exists():
        pytest.skip(f"{path} not present: {what} needs the project's shared/ folder beside the repository")
    return path


@pytest.fixture(scope="session")
def official_fixture():
    import torch

    path = require(REFERENCE / "official_w8_fixture.pth", "the official numerical fixture")
    # The fixture is our own trusted reference file and holds Python lists next to tensors.
    return torch.load(path, weights_only=False)
