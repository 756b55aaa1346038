"""Forward + backward time per clip of Zorro-ViT, Zorro-Swin and Zorro-HiP at matched inputs.

Every model gets the same clip (``--frames`` frames of ``--image-size`` pixels, ``--spec-frames``
x 128 log-mel) and runs a training step's compute (train mode, forward, backward of the summed
four outputs; no optimizer). Reported: seconds per clip (median over ``--repeats`` timed steps
after ``--warmup`` untimed ones), parameters, and forward GFLOPs (multiply-adds, as ``avfusion flops``).

    python benchmarks/zorro_backbones.py                      # CPU table of benchmarks/README.md
    python benchmarks/zorro_backbones.py --device cuda --frames 32 --spec-frames 800 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from avfusion.models import create_model
from avfusion.models.flops import count_flops

MODELS = ("zorro_vit_base", "zorro_swin_base", "zorro_hip_base")


def timed_steps(names: list[str], overrides: dict, batch: int, repeats: int, warmup: int,
                device: str, clock: str = "wall") -> dict[str, float]:
    """Median seconds of one forward + backward over a batch, divided by the batch size.

    Models take turns step by step (round robin), so a machine whose load changes during the
    run slows every model alike instead of whichever happened to run then. ``clock='cpu'``
    measures this process's CPU time instead of wall time: with ``--threads 1`` that is the
    compute a step costs, unaffected by other programs sharing the CPU.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    models, batches = {}, {}
    for name in names:
        torch.manual_seed(0)
        models[name] = create_model(name, **overrides).to(device).train()
        batches[name] = models[name].example_inputs(batch, device=device)

    def step(name: str) -> float:
        m = models[name]
        t0 = now()
        out = m(batches[name])
        sum(o.float().pow(2).mean() for o in out.outputs.values()).backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = now() - t0
        m.zero_grad(set_to_none=True)
        return dt

    for _ in range(warmup):  # allocator, kernels, autotuning: the first two CPU steps are several x slower
        for name in names:
            step(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            times[name].append(step(name))
    return {name: statistics.median(t) / batch for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--spec-frames", type=int, default=320)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (use with --threads 1 on a shared machine)")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = dict(num_frames=a.frames, image_size=(a.image_size, a.image_size), spec_size=(a.spec_frames, 128))
    print(f"inputs: video (3, {a.frames}, {a.image_size}, {a.image_size}), audio ({a.spec_frames}, 128); "
          f"batch {a.batch}, {a.warmup} warm-up + {a.repeats} timed steps, device {a.device}, {a.clock} clock, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    secs = timed_steps(a.models, overrides, a.batch, a.repeats, a.warmup, a.device, a.clock)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for name in a.models:
        count = count_flops(name, **overrides)  # meta device: no memory, no compute
        rows.append(dict(model=name, params_m=count.params / 1e6, gflops=count.gflops, s_per_clip=secs[name]))
    print(f"1-minute load average {load0:.1f} before, {load1:.1f} after")
    ref = rows[0]["s_per_clip"]
    print(f"\n| model | params (M) | fwd GFLOPs | fwd+bwd s/clip ({a.clock}) | vs {rows[0]['model']} |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params_m']:.1f} | {r['gflops']:.1f} | {r['s_per_clip']:.3f} | "
              f"{r['s_per_clip'] / ref:.2f}x |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(args=vars(a), rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
