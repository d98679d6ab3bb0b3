"""Fixtures for the statistics tests."""

import pytest
from synthetic import make_samples

from dtda.samples import SeedSamples


@pytest.fixture
def samples() -> SeedSamples:
    return make_samples()
