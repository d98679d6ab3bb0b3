"""Test session setup: the Triton interpreter on CPU, native-module requirement, seeding."""

import os

# Triton reads this at import: it must be set before anything imports triton (or dtda).
os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("DTDA_TEST_GPU") else "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

from dtda import _native  # noqa: E402


def pytest_sessionstart(session):
    # CI sets DTDA_REQUIRE_NATIVE=1: a missing dtda._C fails the run instead of silently testing
    # only the PyTorch fallbacks.
    _native.check_required()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
