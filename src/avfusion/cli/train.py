"""`avfusion train`: supervised training from a YAML config or from flags.

    avfusion train CONFIG.yaml [key=value ...]
    avfusion train --model NAME --train MANIFEST --val MANIFEST --labels LABELS --out DIR \\
        [--max-steps N] [--save-every N] [--seed S] [key=value ...]

Flags and key=value overrides (dotted, e.g. optim.lr=0.1 data.batch_size=16) apply on top of the
config file. Running the same command again with the same --out resumes from its last
checkpoint. Under torchrun it trains with DDP (NCCL on GPU, gloo on CPU).

Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and exits with status
130 / 143; the same command resumes. A diverging run (NaN / inf loss or gradients) stops with
status 2 and keeps its last good checkpoint (see run.skip_nonfinite).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from avfusion.cli._common import parse_args, print_table
from avfusion.utils.cli_args import ALLOW_PARTIAL_HELP
from avfusion.errors import ConfigError
from avfusion.train.config import TrainConfig
from avfusion.utils.dataclass_config import build, load_yaml

# flag -> config key
FLAGS = {"model": "model", "train": "data.train", "val": "data.val", "labels": "data.labels", "out": "run.out",
         "max_steps": "run.max_steps", "save_every": "run.save_every", "seed": "run.seed",
         "batch_size": "data.batch_size", "workers": "data.num_workers", "device": "run.device",
         "pretrained_backbone": "pretrained_backbone", "init_from": "init_from", "allow_partial": "data.allow_partial"}


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="*", help="an optional CONFIG.yaml, then key=value overrides")
    p.add_argument("--model", help="registered model name (avfusion models)")
    p.add_argument("--train", help="training manifest (CSV / JSONL)")
    p.add_argument("--val", help="validation manifest, evaluated at the end")
    p.add_argument("--labels", help="label map (index,mid,display_name)")
    p.add_argument("--out", help="output directory (resumes if it holds a checkpoint)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="DataLoader workers")
    p.add_argument("--device", help="auto (default: the GPU when there is one) | cpu | cuda | cuda:N")
    p.add_argument("--pretrained-backbone", help="ImageNet ViT weights (.safetensors / .pth / .npz)")
    p.add_argument("--init-from", help="start from this model: a model directory, a released model's name (avfusion "
                                       "models --pretrained) or hf-hub:ORG/NAME; a new head when the labels differ")
    p.add_argument("--allow-partial", action="store_const", const=True, help=ALLOW_PARTIAL_HELP)
    p.add_argument("--json", action="store_true", help="end with a JSON summary line")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base: dict = {}
    overrides = list(args.args)
    if overrides and overrides[0].endswith((".yaml", ".yml")):
        base = load_yaml(overrides.pop(0))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"expected key=value overrides after the config file, got {bad}")
    flags = [f"{key}={json.dumps(v)}" for flag, key in FLAGS.items() if (v := getattr(args, flag)) is not None]
    return build(TrainConfig, base, [*flags, *overrides])


def summarize(result, cfg: TrainConfig, as_json: bool) -> None:
    from pathlib import Path

    last = result.history[-1] if result.history else {}
    loss = last.get("loss")
    row = {"out": str(result.out), "steps": result.steps, "resumed_from": result.resumed_from,
           "final_loss": round(loss, 4) if isinstance(loss, float) and math.isfinite(loss) else None}
    eval_path = Path(cfg.run.out) / "eval.json"
    if eval_path.is_file():
        summary = json.loads(eval_path.read_text())["summary"]
        for cond, metrics in summary.items():
            for k, v in metrics.items():
                row[f"{cond} {k}"] = None if v is None else round(v, 4)
    print_table([row], list(row))
    if as_json:
        print(json.dumps(row, allow_nan=False))


def main(argv: list[str] | None = None, mode: str = "supervised", prog: str = "avfusion train") -> int:
    args = parse_args(parser(prog, __doc__ if mode == "supervised" else None), argv)
    cfg = config_from_args(args)
    from avfusion.train.run import run_training
    from avfusion.train.signals import TrainingInterrupted

    try:
        result = run_training(cfg, mode)
    except TrainingInterrupted as e:  # a checkpoint was saved: one line, 130 (SIGINT) / 143 (SIGTERM)
        if _is_main():
            print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_status
    if result.out is not None and _is_main():
        summarize(result, cfg, args.json)
    return 0


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
