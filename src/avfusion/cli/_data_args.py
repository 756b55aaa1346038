"""Arguments shared by `avfusion validate` and `avfusion prepare`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from collections.abc import Callable, Iterable, Sized
from typing import TypeVar

from avfusion.data.clips import ClipConfig
from avfusion.core.config import ModelConfig
from avfusion.models.registry import get_model_config
from avfusion.tasks import TASK_KINDS
from avfusion.utils.cli_args import int_at_least, positive_float
from avfusion.zoo import HF_HUB_PREFIX, is_pretrained_name, resolve_config
from avfusion.utils.progress import progress_iter

T = TypeVar("T")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="CSV or JSONL manifest (columns id, path, start, end, labels)")
    p.add_argument("--labels", required=True, help="label map CSV: index,mid,display_name[,head]")
    p.add_argument("--task", "--label-mode", dest="task", choices=TASK_KINDS, default=None,
                   help="label encoding (default: multihead if the map has heads, else multi)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--model", help="take the clip sizes and preprocessing from this model: a registered name "
                                   "(avfusion models), a model directory, a released model's name (avfusion models "
                                   "--pretrained; no download needed) or hf-hub:ORG/NAME, frames stored at the rate "
                                   "it samples them (fps / frame_stride); default: the MBT AudioSet setting at 25 fps, "
                                   "for any stride. The flags below override single values")
    p.add_argument("--num-frames", type=int_at_least(1), help="frames per clip")
    p.add_argument("--spec-frames", type=int_at_least(1), help="fbank frames per clip (10 ms each)")
    p.add_argument("--fps", type=positive_float)
    p.add_argument("--frame-stride", type=int_at_least(1))
    p.add_argument("--sample-rate", type=int_at_least(1))
    p.add_argument("--short-side", type=int_at_least(1))
    p.add_argument("--no-progress", action="store_true")


def clip_config(a: argparse.Namespace) -> ClipConfig:
    """The clip geometry: the model's (``--model``, so validate / prepare use exactly what training
    will), with single values overridden by flags."""
    if a.model is None:
        cfg = ModelConfig()
    elif Path(a.model).is_dir() or is_pretrained_name(a.model) or a.model.startswith(HF_HUB_PREFIX):
        cfg = resolve_config(a.model)  # a release's config is known without its weights
    else:
        cfg = get_model_config(a.model)
    pre = {k: v for k, v in (("fps", a.fps), ("frame_stride", a.frame_stride), ("sample_rate", a.sample_rate),
                             ("short_side", a.short_side)) if v is not None}
    if a.model is not None and a.fps is None and a.frame_stride is None:
        # Frames at the rate the model samples them (MBT / Zorro: 25 fps, every 2nd frame -> 12.5
        # fps): exactly the frames its clips use, half the storing and decoding.
        pre.update(fps=cfg.preprocess.fps / cfg.preprocess.frame_stride, frame_stride=1)
    clips = ClipConfig.from_model(cfg)
    clips.preprocess = dataclasses.replace(cfg.preprocess, **pre)
    if a.num_frames is not None:
        clips.num_frames = a.num_frames
    if a.spec_frames is not None:
        clips.spec_frames = a.spec_frames
    return clips


def progress(a: argparse.Namespace, desc: str) -> Callable[[Iterable[T]], Iterable[T]]:
    """Counts rows on stderr as they are consumed (avfusion.utils.progress), unless --no-progress."""
    def wrap(it: Iterable[T]) -> Iterable[T]:
        return progress_iter(it, len(it) if isinstance(it, Sized) else None, desc, "row", enabled=not a.no_progress)

    return wrap
