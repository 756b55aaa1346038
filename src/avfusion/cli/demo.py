"""`avfusion demo`: the main job, end to end on AV-digits (see avfusion/demo/run.py).

Generates the clips, validates and prepares them, trains five tiny models (MBT, Zorro, late
fusion, audio only, video only), evaluates them (also with one modality withheld), predicts on
clips and on a real video, and writes runs/demo/report.html. `--smoke` instead builds every
registered tiny model and runs it on random inputs (seconds, no training).
"""

from __future__ import annotations

import argparse
import time

import torch

from avfusion.cli._common import parse_args, print_table
from avfusion.cli.models import describe
from avfusion.models import create_model, list_models
from avfusion.models.flops import count_flops
from avfusion.utils.cli_args import int_at_least


def _ms(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion demo", description=__doc__)
    p.add_argument("--out", default="runs/demo", help="where everything goes (default runs/demo)")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="training steps per model")
    p.add_argument("--clips", type=int_at_least(1), nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   help="clips per split")
    p.add_argument("--models", nargs="+", help="a subset of the five demo models")
    p.add_argument("--no-bigbuckbunny", action="store_true", help="skip the real-video prediction")
    # numpy's generators, which draw the clips, take no negative seeds
    p.add_argument("--seed", type=int_at_least(0), default=None,
                   help="seed of the data set and of training (default 0)")
    p.add_argument("--jobs", type=int_at_least(1), default=None,
                   help="models trained at once, one CPU thread each (default 2)")
    p.add_argument("--smoke", action="store_true", help="only run every tiny model on random inputs")
    p.add_argument("--pattern", default="*_tiny*", help="--smoke: which models to run")
    p.add_argument("--no-flops", action="store_true", help="--smoke: skip the paper-size FLOP table")
    args = parse_args(p, argv)
    if args.smoke:
        if not list_models(args.pattern):
            p.error(f"--pattern {args.pattern!r} matches no model (`avfusion models` lists all)")
        return smoke(args)
    if args.models:
        from avfusion.demo.run import MODELS

        known = [m for m, _ in MODELS]
        unknown = [m for m in args.models if m not in known]
        if unknown:
            p.error(f"--models: {', '.join(map(repr, unknown))} not among the demo's models {', '.join(known)}")
    return run_full(args)


def run_full(args: argparse.Namespace) -> int:
    from avfusion.demo.run import DemoSettings, print_results, run_demo

    s = DemoSettings(out=args.out)
    if args.steps:
        s.steps = args.steps
    if args.clips:
        s.n_train, s.n_val, s.n_test = args.clips
    if args.models:
        s.models = tuple(args.models)
    s.predict_bigbuckbunny = not args.no_bigbuckbunny
    if args.jobs:
        s.jobs = args.jobs
    if args.seed is not None:
        s.seed = args.seed
    summary = run_demo(s)
    print()
    print_results(summary)
    print(f"\ndone in {summary['seconds'] / 60:.1f} min. Report: {summary['report']}")
    return 0


def smoke(args: argparse.Namespace) -> int:
    torch.manual_seed(0)

    names = list_models(args.pattern)
    print(f"avfusion demo: running {len(names)} models on random example inputs (batch 2)\n")
    rows = []
    for name in names:
        model = create_model(name).eval()
        x = model.example_inputs(2)
        with torch.no_grad():
            out = model(x)
            ms = _ms(lambda: model(x))
            # each modality alone, where the model has both (a unimodal baseline has only its own)
            unimodal = {m: model({m: x[m]}) for m in x} if len(x) > 1 else {}
        ok = all(torch.isfinite(o.logits).all() for o in (out, *unimodal.values()))
        rows.append({
            "model": name, "scheme": describe(name)["scheme"], "params (M)": f"{model.num_params() / 1e6:.2f}",
            "outputs": ",".join(out.outputs), "ms/forward": f"{ms:.1f}",
            "audio-only": ",".join(unimodal["audio"].outputs) if "audio" in unimodal else "-",
            "video-only": ",".join(unimodal["video"].outputs) if "video" in unimodal else "-",
            "finite": "yes" if ok else "NO",
        })
    print_table(rows, ["model", "scheme", "params (M)", "outputs", "audio-only", "video-only", "ms/forward", "finite"])

    if not args.no_flops:
        print("\nPaper-size models, one forward pass (1 multiply-add = 1 FLOP):")
        frows = []
        for name in list_models("*_base*"):
            r = count_flops(name)
            frows.append({"model": name, "params (M)": f"{r.params / 1e6:.1f}", "GFLOPs": f"{r.gflops:.1f}"})
        print_table(frows, ["model", "params (M)", "GFLOPs"])
    failed = [r["model"] for r in rows if r["finite"] != "yes"]
    if failed:
        print(f"\nnon-finite outputs from: {', '.join(failed)}")
        return 1
    print("\nall models ran on their inputs, and the audio-visual ones on each modality alone.")
    return 0
