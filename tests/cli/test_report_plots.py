"""The report's image grid: one mosaic, rows of different lengths, constant images, byte-identical reruns."""

import pytest
import torch

plots = pytest.importorskip("dtda.report.plots")


def test_image_grid_takes_ragged_rows_and_constant_images_and_reruns_byte_identically(tmp_path):
    pictures = torch.rand(7, 5, 3, generator=torch.Generator().manual_seed(0))
    pictures[2] = 4.0  # constant: its range is 0, so it is scaled to 0, not 0 / 0
    rows = {"mean shift": [0, 2, 6], "variance increase": [5], "spread only": [1, 3, 4, 2]}
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    plots.images(first, pictures, list("abcdefg"), rows)
    plots.images(second, pictures, list("abcdefg"), rows)
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()
