"""The task kinds, one vocabulary for label maps, losses, metrics and configs."""

from __future__ import annotations

from typing import Iterable, Literal, get_args

# multilabel: multi-hot targets, sigmoid BCE, mAP (AudioSet); single: one class, softmax CE, top-1
# (VGGSound, Kinetics-Sounds, ESC-50); multihead: one class per named head (EPIC-KITCHENS verb + noun)
TaskKind = Literal["multilabel", "single", "multihead"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)


def task_of(has_heads: bool, label_counts: Iterable[int]) -> TaskKind:
    """The task a data set implies: multihead for a label map with heads; else single when there
    is a row and every row has exactly one label, else multilabel."""
    if has_heads:
        return "multihead"
    counts = list(label_counts)
    return "single" if counts and all(n == 1 for n in counts) else "multilabel"
