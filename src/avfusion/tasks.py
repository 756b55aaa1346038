"""The task kinds, one vocabulary for label maps, losses, metrics and configs."""

from __future__ import annotations

from typing import Literal, get_args

# multilabel: multi-hot targets, sigmoid BCE, mAP (AudioSet); single: one class, softmax CE, top-1
# (VGGSound, Kinetics-Sounds, ESC-50); multihead: one class per named head (EPIC-KITCHENS verb + noun)
TaskKind = Literal["multilabel", "single", "multihead"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
