"""`avfusion bench MODEL [MODEL ...] [key=value ...]`: speed, memory, FLOPs and MFU per model.

Measures forward (inference mode) and forward + backward (a training step, loss summed over
every output head) on random inputs at the configured sizes: median ms per step over
``--repeats`` timed steps after ``--warmup``, taken round-robin over the models (so load from
other processes hits all alike), clips/s, peak memory of one step (CUDA:
max_memory_allocated; CPU: peak RSS delta, see avfusion/bench/memory.py), model GFLOPs per clip
(one multiply-add = one FLOP), achieved TFLOP/s (2 FLOPs per multiply-add) and MFU against the
datasheet peak of known GPUs (avfusion/bench/peaks.py). Then ratio tables: dense masks against
the efficient path (time against FLOPs), and early fusion / Zorro against MBT.

Examples:
  avfusion bench zorro_vit_base mbt_base num_frames=8 --attn-impl auto,dense --batch-size 1
  avfusion bench 'mbt_base*' --precision bf16 --compile --mode fwdbwd --json
"""

from __future__ import annotations

import argparse
import json

from avfusion.bench.runner import BenchConfig, attn_ratios, bench_models, scheme_ratios
from avfusion.bench.timing import load_average
from pathlib import Path

from avfusion.cli._common import parse_args, print_json, print_table
from avfusion.errors import ConfigError
from avfusion.layers.attention import ATTN_IMPLS
from avfusion.models import get_model_config, list_models
from avfusion.utils.cli_args import device_arg, int_at_least
from avfusion.utils.dataclass_config import parse_overrides

_MODES = {"fwd": ("fwd",), "fwdbwd": ("fwdbwd",), "both": ("fwd", "fwdbwd")}


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="+", metavar="MODEL|key=value",
                   help="registered model names or shell patterns ('mbt_base*'), and config overrides "
                        "applied to every model (num_frames=8)")
    p.add_argument("--batch-size", type=int_at_least(1), default=2)
    p.add_argument("--mode", choices=sorted(_MODES), default="both")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (eager if it fails)")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--attn-impl", default=None,
                   help=f"one of {ATTN_IMPLS}, or a comma list to compare (auto,dense); default: the model's")
    p.add_argument("--optimizer", choices=("none", "sgd", "adamw"), default="none",
                   help="add an optimizer step to each training step")
    p.add_argument("--fused", choices=("auto", "on", "off"), default="auto", help="fused optimizer kernels")
    p.add_argument("--device", type=device_arg, default="auto",
                   help="auto (default: the GPU when there is one) | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch threads (default: torch's)")
    p.add_argument("--warmup", type=int_at_least(0), default=1)
    p.add_argument("--repeats", type=int_at_least(1), default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--no-interleave", action="store_true",
                   help="time each model in turn instead of round-robin (round-robin keeps ratios fair "
                        "on a loaded machine but holds every model in memory at once)")
    p.add_argument("--json", action="store_true", help="end with one JSON line per result and ratio")
    p.add_argument("--out", default=None, help="also write all results as one JSON file")
    args = parse_args(p, argv)

    names: list[str] = []
    pairs = [s for s in args.items if "=" in s]
    for item in (s for s in args.items if "=" not in s):
        found = list_models(item) if any(ch in item for ch in "*?[") else [item]
        if not found:
            p.error(f"no model matches {item!r}")
        names += [n for n in found if n not in names]
    if not names:
        p.error("name at least one model")
    overrides = parse_overrides(pairs)
    for name in names:  # unknown names and bad overrides fail now, not after minutes of timing others
        get_model_config(name, **overrides)
    if args.out:  # the results are written at the end: a path that cannot take them fails first
        out = Path(args.out)
        if out.is_dir():
            raise ConfigError(f"--out {out} is a directory; name a file, e.g. {out / 'bench.json'}")
        if not out.parent.is_dir():
            raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    impls = [None] if args.attn_impl is None else [s.strip() for s in args.attn_impl.split(",") if s.strip()]
    for impl in impls:
        if impl is not None and impl not in ATTN_IMPLS:
            p.error(f"--attn-impl must be among {ATTN_IMPLS}, got {impl!r}")
    fused = {"auto": None, "on": True, "off": False}[args.fused]

    specs = []
    for name in names:
        for impl in impls:
            bc = BenchConfig(batch_size=args.batch_size, modes=_MODES[args.mode], precision=args.precision,
                             compile=args.compile, grad_checkpointing=args.grad_checkpointing,
                             attn_impl=impl, optimizer=args.optimizer, fused=fused, device=args.device,
                             warmup=args.warmup, repeats=args.repeats, memory=not args.no_memory,
                             threads=args.threads)
            specs.append((name, bc, overrides))
    rows = bench_models(specs, interleave=not args.no_interleave)

    table = [{"model": r["model"], "attn": r["attn_impl"], "mode": r["mode"], "batch": r["batch_size"],
              "ms/step": f"{r['ms_per_step']:.1f}", "iqr ms": f"{r['iqr_ms']:.1f}", "min ms": f"{r['min_ms']:.1f}",
              "cpu ms": f"{r['cpu_ms_per_step']:.1f}",
              "clips/s": f"{r['clips_per_s']:.2f}",
              "peak MiB": _fmt(r["peak_mem_mib"], ".0f"), "GFLOPs/clip": f"{r['gflops']:.4g}",
              "TFLOP/s": f"{r['tflops']:.3g}", "MFU": _fmt(None if r["mfu"] is None else 100 * r["mfu"], ".1f")}
             for r in rows]
    first = rows[0]
    print(f"device: {first['device']}; torch {first['torch']}; precision {args.precision}; "
          f"compile {first['compile']}; grad checkpointing {args.grad_checkpointing}; "
          f"load average {load_average()}")
    print_table(table, list(table[0]))
    ar, sr = attn_ratios(rows), scheme_ratios(rows)
    if ar:
        print("\nmasked attention: dense-mask time / efficient-path time (against the FLOP ratio)")
        print_table([{"model": a["model"], "mode": a["mode"], "impl": a["impl"],
                      "speedup": f"{a['speedup']:.2f}x", "min": f"{a['speedup_min']:.2f}x",
                      "CPU time": f"{a['speedup_cpu']:.2f}x", "FLOP ratio": f"{a['flop_ratio']:.2f}x"} for a in ar],
                    ["model", "mode", "impl", "speedup", "min", "CPU time", "FLOP ratio"])
    if sr:
        print("\nschemes at the same token counts: time ratio against FLOP ratio")
        print_table([{"pair": s["pair"], "mode": s["mode"], "time ratio": f"{s['time_ratio']:.2f}",
                      "min": f"{s['time_ratio_min']:.2f}", "CPU time": f"{s['time_ratio_cpu']:.2f}",
                      "FLOP ratio": f"{s['flop_ratio']:.2f}"} for s in sr],
                    ["pair", "mode", "time ratio", "min", "CPU time", "FLOP ratio"])
    if args.json:
        for r in rows:
            print_json({"kind": "result", **r})
        for a in ar:
            print_json({"kind": "attn_ratio", **a})
        for s in sr:
            print_json({"kind": "scheme_ratio", **s})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": rows, "attn_ratios": ar, "scheme_ratios": sr}, f, indent=1)
    return 0
