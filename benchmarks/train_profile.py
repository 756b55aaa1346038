#!/usr/bin/env python
"""Where an MBT-B (or Zorro-B) training step spends its time on the CPU, by kind of operator.

The step is the shared harness's (``../shared/peers/bench_side.py``, workload ``mbt_train``):
batch 1, 8 frames of 224 x 224 + an 800 x 128 spectrogram, the model in train mode, loss = the
sum of the means of its outputs' logits, backward, gradients cleared; no optimizer. The step is
run under ``torch.profiler`` once per CPU GEMM setting (``avfusion.layers.set_cpu_gemm``:
``aten`` = MKL as ``nn.Linear``, ``onednn`` = every product on oneDNN, ``auto`` = the default,
each product on the backend a trial found fastest on this host; its choices are measured afresh,
in a temporary ``AVFUSION_HOME``, during the warm-up), after ``--warmup`` unprofiled steps, and the
operators' self times are summed into kinds:

- ``linear GEMMs``: the products of the linear layers (aten ``mm`` / ``addmm``, oneDNN ``_linear_pointwise``);
- ``attention``: SDPA forward and backward kernels (and ``bmm`` / ``softmax`` where a path uses them);
- ``copies``: ``copy_`` / ``clone`` (layout changes: attention heads, transposed operands);
- ``GELU``, ``LayerNorm``, ``reductions`` (bias gradients), ``patch embedding`` (convolutions);
- ``other``: everything else (adds, views, autograd bookkeeping).

Also times ``--reps`` unprofiled steps per setting, taking turns; ``--compile`` adds the step
through ``torch.compile(model)`` (inductor picks its own kernels for the linear layers) as a third
participant, timed only. ``--batch``, ``--image``, ``--spec`` set other input sizes (the demo's:
``--model mbt_tiny --batch 32 --image 48 --spec 192x32``). Command used for benchmarks/README.md:

    PYTHONPATH=src taskset -c 0,1 python benchmarks/train_profile.py --threads 2 --out benchmarks/results/train_profile_t2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import avfusion
from avfusion.layers.gemm_tune import TUNER
from avfusion.layers.linear import gemm_choices, set_cpu_gemm

KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("linear GEMMs", ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise")),
    ("attention", ("scaled_dot_product", "aten::bmm", "aten::_softmax", "aten::_softmax_backward_data")),
    ("copies", ("aten::copy_", "aten::clone")),
    ("GELU", ("aten::gelu",)),
    ("LayerNorm", ("layer_norm",)),
    ("reductions", ("aten::sum",)),
    ("patch embedding", ("convolution",)),
]


def kind_of(name: str) -> str:
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


def make_step(model_name: str, frames: int, compile_too: bool = False, batch: int = 1, image: int = 224,
              spec: tuple[int, int] = (800, 128)):
    kw = dict(num_classes=527, num_frames=frames, spec_size=spec, image_size=(image, image))
    if model_name.startswith("mbt") and "tiny" not in model_name:
        kw["fusion_layer"] = 8
    model = avfusion.create_model(model_name, **kw).train()
    g = torch.Generator().manual_seed(0)
    inputs = {"video": torch.randn(batch, 3, frames, image, image, generator=g),
              "audio": torch.randn(batch, *spec, generator=g)}

    def make(fn):
        def step() -> None:
            out = fn(inputs)
            sum(o.mean() for o in out.outputs.values()).backward()
            model.zero_grad(set_to_none=True)
        return step

    return make(model), (make(torch.compile(model)) if compile_too else None)


def profile_step(step) -> dict[str, float]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    by_kind: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        by_kind[kind_of(ev.key)] += ev.self_cpu_time_total / 1e6  # seconds of the main thread
    return dict(by_kind)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--model", default="mbt_base")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--image", type=int, default=224, help="frame size (square)")
    p.add_argument("--spec", default="800x128", help="spectrogram frames x mel bins")
    p.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    os.environ["AVFUSION_HOME"] = tempfile.mkdtemp(prefix="avfusion-train-profile-")
    TUNER.reset()
    spec = tuple(int(v) for v in args.spec.split("x"))
    step, compiled = make_step(args.model, args.frames, args.compile, args.batch, args.image, spec)
    backends = ("aten", "onednn", "auto")
    runs = {b: step for b in backends}
    if compiled is not None:
        runs["compile"] = compiled
        t = time.perf_counter()
        compiled()
        print(f"torch.compile: first step {time.perf_counter() - t:.1f} s")
    for b, fn in runs.items():
        set_cpu_gemm("auto" if b == "compile" else b)
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {b: [] for b in runs}
    cpu: dict[str, list[float]] = {b: [] for b in runs}
    for _ in range(args.reps):  # taking turns, so load from elsewhere hits all alike
        for b, fn in runs.items():
            set_cpu_gemm("auto" if b == "compile" else b)
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[b].append(time.perf_counter() - t)
            cpu[b].append(time.process_time() - c)
    profiles = {}
    for b in backends:
        set_cpu_gemm(b)
        profiles[b] = profile_step(step)
    set_cpu_gemm("auto")
    kinds = [k for k, _ in KINDS] + ["other"]
    print(f"{args.model} training step, {args.frames} frames, {args.threads} thread(s); seconds (share)")
    print("| kind | " + " | ".join(f"CPU GEMM = {b}" for b in backends) + " |")
    print("|---|" + "---|" * len(backends))
    for k in kinds + ["total (profiled)"]:
        cells = []
        for b in backends:
            total = sum(profiles[b].values())
            v = total if k.startswith("total") else profiles[b].get(k, 0.0)
            cells.append(f"{v:.2f} ({100 * v / total:.0f}%)")
        print(f"| {k} | " + " | ".join(cells) + " |")
    med = {b: statistics.median(v) for b, v in times.items()}
    print("| step, median of %d unprofiled (s) | " % args.reps + " | ".join(f"{med[b]:.2f}" for b in backends) + " |")
    cmed = {b: statistics.median(v) for b, v in cpu.items()}
    print("| step, median CPU time (s, all threads) | " + " | ".join(f"{cmed[b]:.2f}" for b in backends) + " |")
    print(f"speed-up over aten: onednn {med['aten'] / med['onednn']:.2f}x, auto {med['aten'] / med['auto']:.2f}x; "
          f"in CPU time onednn {cmed['aten'] / cmed['onednn']:.2f}x, auto {cmed['aten'] / cmed['auto']:.2f}x")
    chosen = gemm_choices()
    print("auto's choices: " + ", ".join(f"{b} {sum(v == b for v in chosen.values())}" for b in ("aten", "onednn"))
          + " of %d product keys" % len(chosen))
    if "compile" in med:
        print(f"torch.compile step, median: {med['compile']:.2f} s ({med['auto'] / med['compile']:.2f}x the eager default)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(model=args.model, frames=args.frames, threads=args.threads, torch=torch.__version__,
                           batch=args.batch, image=args.image, spec=args.spec, step_s=times, cpu_s=cpu,
                           profile_s=profiles, auto_choices=chosen), fh, indent=1)


if __name__ == "__main__":
    main()
