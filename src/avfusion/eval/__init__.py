"""Evaluation: metrics (mAP, AUC / d-prime, top-k, EPIC action), the multi-view protocol,
aggregation, retrieval, attention maps, plots. Inference products (predict, corpus runs,
timelines, embeddings, precision / compile, export) are in infer/.

Definitions are in ``docs/evaluation.md``. The plotting functions import matplotlib on first
use, so importing this package stays light.
"""

from __future__ import annotations

from typing import Any

from avfusion.eval.aggregate import AVERAGE_MODES, VideoPredictions, average_views
from avfusion.utils.output import json_safe
from avfusion.eval.metrics import (
    SCORE_TYPES,
    TASK_KINDS,
    auc_and_d_prime,
    average_precision,
    classification_report,
    confusion_matrix,
    d_prime,
    epic_metrics,
    mean_average_precision,
    mean_class_accuracy,
    report_per_output,
    roc_auc,
    single_label_metrics,
    topk_accuracy,
)

__all__ = [
    "AVERAGE_MODES",
    "SCORE_TYPES",
    "TASK_KINDS",
    "VideoPredictions",
    "auc_and_d_prime",
    "average_precision",
    "average_views",
    "classification_report",
    "confusion_matrix",
    "d_prime",
    "epic_metrics",
    "json_safe",
    "mean_average_precision",
    "mean_class_accuracy",
    "plot_confusion_matrix",
    "plot_per_class_ap",
    "report_per_output",
    "roc_auc",
    "single_label_metrics",
    "topk_accuracy",
]

_PLOTS = ("plot_confusion_matrix", "plot_per_class_ap")


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        from avfusion.eval import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'avfusion.eval' has no attribute {name!r}")
