"""Arguments shared by `avfusion validate` and `avfusion prepare`."""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, TypeVar

from avfusion.data.clips import ClipConfig
from avfusion.models.config import ModelConfig, PreprocessConfig

T = TypeVar("T")


def add_common(p: argparse.ArgumentParser) -> None:
    d, pre = ModelConfig.__dataclass_fields__, PreprocessConfig()
    p.add_argument("manifest", help="CSV or JSONL manifest (columns id, path, start, end, labels)")
    p.add_argument("--labels", required=True, help="label map CSV: index,mid,display_name[,head]")
    p.add_argument("--label-mode", choices=["multi", "single", "multihead"], default=None,
                   help="label encoding (default: multihead if the map has heads, else multi)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--num-frames", type=int, default=d["num_frames"].default, help="frames per clip")
    p.add_argument("--spec-frames", type=int, default=800, help="fbank frames per clip (10 ms each)")
    p.add_argument("--fps", type=float, default=pre.fps)
    p.add_argument("--frame-stride", type=int, default=pre.frame_stride)
    p.add_argument("--sample-rate", type=int, default=pre.sample_rate)
    p.add_argument("--short-side", type=int, default=pre.short_side)
    p.add_argument("--no-progress", action="store_true")


def clip_config(a: argparse.Namespace) -> ClipConfig:
    pre = PreprocessConfig(fps=a.fps, frame_stride=a.frame_stride, sample_rate=a.sample_rate,
                           short_side=a.short_side)
    return ClipConfig(num_frames=a.num_frames, spec_frames=a.spec_frames, preprocess=pre)


def progress(a: argparse.Namespace, desc: str):  # type: ignore[no-untyped-def]
    def wrap(it: Iterable[T]) -> Iterable[T]:
        if a.no_progress or not sys.stderr.isatty():
            return it
        from tqdm import tqdm

        return tqdm(it, desc=desc, file=sys.stderr)

    return wrap
