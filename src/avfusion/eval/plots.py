"""Evaluation plots written as PNG files: per-class AP and a row-normalised confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so
no GUI backend is needed and the process-wide pyplot backend is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from avfusion.eval.metrics import ArrayLike, confusion_matrix


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_per_class_ap(per_class_ap: Sequence[float], class_names: Sequence[str] | None, path: str | Path,
                      max_bars: int = 40) -> Path:
    """Horizontal bar chart of per-class AP, best class on top.

    Classes whose AP is NaN (no positives) are left out and counted in the title. With more than
    ``max_bars`` classes only the best and worst ``max_bars // 2`` are drawn, so the chart stays
    readable for AudioSet's 527 classes.
    """
    ap = np.asarray(per_class_ap, dtype=np.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(ap))]
    if len(names) != len(ap):
        raise ValueError(f"{len(names)} class names for {len(ap)} AP values")
    valid = np.flatnonzero(~np.isnan(ap))
    order = valid[np.argsort(-ap[valid], kind="stable")]  # best first
    truncated = len(order) > max_bars
    if truncated:
        half = max_bars // 2
        order = np.concatenate([order[:half], order[-half:]])

    fig = Figure(figsize=(8, 1.5 + 0.25 * max(len(order), 1)))
    ax = fig.add_subplot()
    y = np.arange(len(order))[::-1]  # first entry at the top
    ax.barh(y, ap[order], color="tab:blue")
    ax.set_yticks(y, [names[i] for i in order], fontsize=7)
    if truncated:
        ax.axhline(y[half - 1] - 0.5, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    mean = float(ap[valid].mean()) if len(valid) else math.nan
    title = f"per-class AP (mAP {mean:.3f} over {len(valid)} classes"
    title += f"; {len(ap) - len(valid)} without positives)" if len(valid) < len(ap) else ")"
    if truncated:
        title += f"\nbest and worst {max_bars // 2} of {len(valid)}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(labels: ArrayLike, preds: ArrayLike, class_names: Sequence[str] | None,
                          path: str | Path, num_classes: int | None = None, max_ticks: int = 50) -> Path:
    """Confusion matrix with each row (true class) normalised to sum to 1.

    labels, preds: (N,) ints. Rows of classes without samples stay 0. Class names are drawn as
    tick labels when there are at most ``max_ticks`` classes.
    """
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else int(max(np.max(labels), np.max(preds))) + 1
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    cm = confusion_matrix(labels, preds, num_classes).double()
    support = cm.sum(dim=1, keepdim=True)
    norm = torch.where(support > 0, cm / support.clamp(min=1), torch.zeros_like(cm)).numpy()

    side = min(4 + 0.25 * num_classes, 20)
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if num_classes <= max_ticks:
        ticks = np.arange(num_classes)
        names = list(class_names) if class_names is not None else [str(i) for i in ticks]
        ax.set_xticks(ticks, names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = float(cm.diagonal().sum() / cm.sum()) if cm.sum() > 0 else math.nan
    ax.set_title(f"confusion matrix, rows normalised (accuracy {acc:.3f})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
