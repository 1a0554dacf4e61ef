"""Fixtures shared by the unit tests of the training script."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def train_tiny():
    """scripts/train_tiny.py as a module (it is a script, not part of the package)."""
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("train_tiny", ROOT / "scripts" / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
