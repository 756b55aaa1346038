"""Plots are written as real PNG files, for small and many-class cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avfusion.eval import plot_confusion_matrix, plot_per_class_ap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def test_per_class_ap_plot_small_and_truncated(tmp_path):
    out = plot_per_class_ap([0.5, math.nan, 0.9, 0.1], ["dog", "cat", "bird", "car"], tmp_path / "ap.png")
    assert out == tmp_path / "ap.png" and _is_png(out)
    rng = np.random.default_rng(0)
    many = rng.random(527).tolist()
    out = plot_per_class_ap(many, None, tmp_path / "sub" / "ap527.png")  # creates the folder
    assert _is_png(out)
    with pytest.raises(ValueError, match="class names"):
        plot_per_class_ap([0.5, 0.2], ["one"], tmp_path / "x.png")


def test_confusion_matrix_plot(tmp_path):
    labels = [0, 1, 2, 2, 1]
    preds = [0, 2, 2, 2, 1]
    out = plot_confusion_matrix(labels, preds, ["a", "b", "c", "d"], tmp_path / "cm.png")  # class "d" unseen
    assert _is_png(out)
    rng = np.random.default_rng(1)
    out = plot_confusion_matrix(rng.integers(0, 300, 500), rng.integers(0, 300, 500), None, tmp_path / "cm300.png")
    assert _is_png(out)

