#!/usr/bin/env python
"""The demo's training step, model by model: what `avfusion demo` pays per step of each of its
five models (docs/demo.md "Where the time goes, and the 8-minute demo").

Each model is built as the demo trains it (``avfusion.demo.run.INPUTS`` and ``MODEL_OVERRIDES``,
10 classes), in train mode, and fed random inputs of the demo's shapes at its batch size (32).
One step = forward, the cross-entropy of every output summed, backward, AdamW step, gradients
cleared: the model's share of a training step, without the data path or the trainer's logging.
``--threads`` CPU threads (the demo trains each model on one), ``--warmup`` steps first (the
linear products' per-host trial runs there, in a temporary ``AVFUSION_HOME``), then the median
CPU time (``time.process_time``) of ``--reps`` steps, the models taking turns so that load from
elsewhere hits all alike. Command used for docs/demo.md:

    PYTHONPATH=src taskset -c 0 python benchmarks/demo_step.py --out benchmarks/results/demo_step_avx2_t1.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date

import torch
import torch.nn.functional as F

from avfusion.demo.run import INPUTS, MODEL_OVERRIDES, MODELS, DemoSettings, model_overrides
from avfusion.layers.gemm_tune import TUNER
from avfusion.models import create_model
from avfusion.utils.cpu import cpu_info, simd_flags


def make_step(name: str, batch: int):
    """A closure running one training step of the demo's ``name`` on fixed random inputs."""
    model = create_model(name, num_classes=10, task="single", **model_overrides(name)).train()
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    inputs = {}
    if "video" in cfg.modalities:
        inputs["video"] = torch.randn(batch, 3, cfg.num_frames, *cfg.image_size, generator=g)  # (B, C, T, H, W)
    if "audio" in cfg.modalities:
        inputs["audio"] = torch.randn(batch, *cfg.spec_size, generator=g)  # (B, frames, mel bins)
    target = torch.randint(0, 10, (batch,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def step() -> None:
        out = model(inputs)
        sum(F.cross_entropy(o, target) for o in out.outputs.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=DemoSettings.batch_size)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--models", nargs="+", default=[m for m, _ in MODELS])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    os.environ["AVFUSION_HOME"] = tempfile.mkdtemp(prefix="avfusion-demo-step-")  # the products' trial runs afresh
    TUNER.reset()
    steps = {m: make_step(m, args.batch) for m in args.models}
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    cpu: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(args.reps):
        for m, fn in steps.items():
            c = time.process_time()
            fn()
            cpu[m].append(time.process_time() - c)
    med = {m: statistics.median(v) for m, v in cpu.items()}
    model_name, simd = cpu_info()[0], simd_flags()
    print(f"{model_name}; {' '.join(simd)}; torch {torch.__version__}; {args.threads} thread(s), batch {args.batch}")
    n_steps = DemoSettings.steps  # the demo's steps per model
    print(f"| model | step, median CPU time (s) | x {n_steps} steps (s) |")
    print("|---|---|---|")
    for m, v in med.items():
        print(f"| {m} | {v:.3f} | {n_steps * v:.0f} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(date=date.today().isoformat(), cpu=model_name, simd=simd, torch=torch.__version__,
                           threads=args.threads, batch=args.batch, inputs=INPUTS, model_overrides=MODEL_OVERRIDES,
                           median_cpu_s=med, cpu_s=cpu), fh, indent=1, default=str)


if __name__ == "__main__":
    main()
