"""Model speed suite: `python benchmarks/models.py [--suite cpu|gpu] [--out results.json]`.

Runs avfusion.bench.bench_model over a fixed list of (model, attn_impl, settings) and prints the
tables of benchmarks/README.md ("Model speed") as markdown, with the machine and load average.

Timed steps go round-robin over the models of a suite (all held in memory), so load from other
processes on a shared machine hits every model alike and the ratios stay meaningful.

- ``cpu``: ViT-B widths at reduced inputs so a 2-core CPU finishes: 8 frames of 224 x 224
  (4 x 14 x 14 = 784 video tokens) and an 800 x 128 spectrogram (400 audio tokens), batch 1,
  forward + backward; zorro_vit_base with 'auto' (split) and 'dense' masks, mbt_base and
  mbt_base_early at the same token counts.
- ``gpu``: the paper sizes (32 frames: 3136 video tokens), bf16, torch.compile, batch 32,
  fused AdamW; MFU against the datasheet peak (avfusion/bench/peaks.py).
- ``ckpt``: peak memory of a training step with and without gradient checkpointing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

import torch

from avfusion.bench import BenchConfig, attn_ratios, bench_models, load_average, scheme_ratios

CPU_INPUTS = {"num_frames": 8}


def suite(name: str, repeats: int, threads: int | None = None) -> list[tuple[str, BenchConfig, dict[str, Any]]]:
    if name == "cpu":
        bc = dict(batch_size=1, modes=("fwdbwd",), repeats=repeats, device="cpu", threads=threads)
        return [
            ("zorro_vit_base", BenchConfig(attn_impl="auto", **bc), CPU_INPUTS),
            ("zorro_vit_base", BenchConfig(attn_impl="dense", **bc), CPU_INPUTS),
            ("mbt_base", BenchConfig(**bc), CPU_INPUTS),
            ("mbt_base_early", BenchConfig(**bc), CPU_INPUTS),
        ]
    if name == "ckpt":
        bc = dict(batch_size=1, modes=("fwdbwd",), repeats=repeats, warmup=1, device="cpu", threads=threads)
        return [
            ("zorro_vit_base", BenchConfig(grad_checkpointing=False, **bc), CPU_INPUTS),
            ("zorro_vit_base", BenchConfig(grad_checkpointing=True, **bc), CPU_INPUTS),
        ]
    if name == "gpu":
        bc = dict(batch_size=32, precision="bf16", compile=True, optimizer="adamw", repeats=repeats,
                  device="cuda")
        return [
            ("mbt_base", BenchConfig(**bc), {}),
            ("mbt_base_early", BenchConfig(**bc), {}),
            ("zorro_vit_base", BenchConfig(attn_impl="auto", **bc), {}),
            ("zorro_vit_base", BenchConfig(attn_impl="split", **bc), {}),
            ("zorro_vit_base", BenchConfig(attn_impl="dense", **bc), {}),
            ("mbt_base", BenchConfig(**{**bc, "grad_checkpointing": True}), {}),
        ]
    raise ValueError(f"unknown suite {name!r}")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | attn | mode | batch | prec | compile | ckpt | ms/step (median) | IQR ms | min ms "
             "| CPU ms/step | clips/s | peak MiB | GFLOPs/clip | TFLOP/s | MFU |", "|" + "---|" * 16]
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        mem = "-" if r["peak_mem_mib"] is None else f"{r['peak_mem_mib']:.0f}"
        lines.append(f"| `{r['model']}` | {r['attn_impl']} | {r['mode']} | {r['batch_size']} | {r['precision']} "
                     f"| {r['compile']} | {r['grad_checkpointing']} | {r['ms_per_step']:.0f} | {r['iqr_ms']:.0f} "
                     f"| {r['min_ms']:.0f} | {r['cpu_ms_per_step']:.0f} "
                     f"| {r['clips_per_s']:.3f} | {mem} | {r['gflops']:.1f} | {r['tflops']:.3f} | {mfu} |")
    ar, sr = attn_ratios(rows), scheme_ratios(rows)
    if ar:
        lines += ["", "| model | mode | dense / efficient: median wall | min wall | CPU time | FLOPs |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| `{a['model']}` ({a['impl']}) | {a['mode']} | {a['speedup']:.2f}x | {a['speedup_min']:.2f}x "
                  f"| {a['speedup_cpu']:.2f}x | {a['flop_ratio']:.2f}x |" for a in ar]
    if sr:
        lines += ["", "| pair | mode | time ratio: median wall | min wall | CPU time | FLOP ratio |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {s['pair']} | {s['mode']} | {s['time_ratio']:.2f} | {s['time_ratio_min']:.2f} "
                  f"| {s['time_ratio_cpu']:.2f} | {s['flop_ratio']:.2f} |" for s in sr]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("cpu", "ckpt", "gpu"), default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1: CPU time ~ contention-free)")
    p.add_argument("--out", default=None, help="write every result row as JSON")
    args = p.parse_args(argv)
    start = load_average()
    # Round-robin timing (all models held at once) so load drift hits every model alike;
    # the checkpointing suite runs in turn, so each peak-memory step sees only its own model.
    rows = bench_models(suite(args.suite, args.repeats, args.threads), interleave=args.suite != "ckpt")
    for r in rows:
        print(f"{r['model']} {r['attn_impl']} ckpt={r['grad_checkpointing']}: {r['ms_per_step']:.0f} ms "
              f"{r['times_s']} peak {r['peak_mem_mib']} MiB", file=sys.stderr, flush=True)
    end = load_average()
    print(f"machine: {platform.machine()} {rows[0]['device']}, torch {torch.__version__}; "
          f"load average at start {start}, at end {end}\n")
    print(markdown(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"suite": args.suite, "load_start": start, "load_end": end, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
