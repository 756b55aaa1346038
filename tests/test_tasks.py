"""tasks.py: one vocabulary of task kinds for label maps, losses, metrics and configs."""

from typing import get_args

from avfusion import tasks
from avfusion.eval import metrics


def test_the_task_kinds():
    assert tasks.TASK_KINDS == get_args(tasks.TaskKind) == ("multilabel", "single", "multihead")


def test_metrics_use_the_same_task_kinds():
    assert metrics.TASK_KINDS == tasks.TASK_KINDS
