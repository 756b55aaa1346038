"""End-to-end CPU inference of a 10 s clip, per stage, at every precision; and quality against fp32.

Speed. One synthetic 10 s clip (640x360 H.264 + stereo AAC, as benchmarks/synthetic_clips.py
writes them) goes through what ``avfusion predict --clips 1`` does, one stage at a time:

- ``decode``: open the file (its timeline), PyAV-decode the 32 frames of the centre clip and the
  8 s of audio around it (avfusion.data.clips.FileSegment.decode);
- ``transforms``: resize / centre crop / normalise the frames, fbank + normalise the audio
  (ClipProcessor.video_views / audio_views): 32 x 224 x 224 and 800 x 128, the papers' inputs;
- ``model``: one forward pass, batch 1, of each variant (avfusion.infer.fast.prepare_for_inference):
  ``eager`` (the model as loaded, no preparation: the baseline), ``fp32``, ``bf16``, ``int8``,
  ``fp32+compile``, ``bf16+compile``.

Everything runs in one process with ``--threads`` torch threads (1 by default: run it under
``taskset -c 0``), every model and variant built first (random weights, the classifier re-drawn
so that outputs are not constant), then one untimed warm-up round (compilation happens there; its
time is reported), then ``--rounds`` rounds in which the stages and the variants take turns, so
that load from other processes hits all alike. Reported: median and range of the process CPU time
and the wall time, per stage; end to end = decode + transforms + model of the same round; the
peak RSS one forward adds (avfusion.bench.memory) and the weights' size; the load average.

Quality. (1) On the benchmark clip: each variant's scores against the eager model's (max
difference of sigmoid scores, the same top-1 class). (2) On the demo's test split (AV-digits,
200 clips, 10 classes): top-1 accuracy and mAP of each variant of the demo's trained tiny models
and the change against fp32, top-1 agreement with fp32 and the max score difference. Uses
``runs/demo/models/{mbt_tiny,zorro_vit_tiny}`` when present (``avfusion demo``), else trains a
reduced demo (``--demo-steps`` steps, the demo's own functions) in ``--demo-cache`` (kept for the
next run) or a temporary folder. Tiny models have short sequences: to exercise the blocked
attention that ``bf16+compile`` uses on long ones, the quality run forces it on every length
(``fast.LONG = 0``) and says so.

Usage::

    taskset -c 0 python benchmarks/inference.py --rounds 5 --json benchmarks/results/inference.json
    python benchmarks/inference.py --quality-only --demo-cache /tmp/demo_tiny
    python benchmarks/inference.py --models mbt_base --variants eager,fp32,int8 --rounds 3 --no-quality
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avfusion.bench.memory import measure_peak  # noqa: E402
from avfusion.bench.timing import load_average  # noqa: E402
from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment  # noqa: E402
from avfusion.infer import fast  # noqa: E402
from avfusion.eval.metrics import mean_average_precision  # noqa: E402
from avfusion.models.pretrained import load_pretrained  # noqa: E402
from avfusion.models.registry import create_model  # noqa: E402
from synthetic_clips import make_clips  # noqa: E402

VARIANTS = ("eager", "fp32", "bf16", "int8", "fp32+compile", "bf16+compile")
DEMO_MODELS = ("mbt_tiny", "zorro_vit_tiny")


def machine() -> str:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, bf16: {fast.cpu_bf16() or 'no'}, int8: {fast.cpu_int8() or 'no VNNI'}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")


def prepare(model: torch.nn.Module, variant: str) -> torch.nn.Module:
    if variant == "eager":
        return model.eval()
    precision, _, compiled = variant.partition("+")
    return fast.prepare_for_inference(model, precision, compile=bool(compiled))


def weights_mib(model: torch.nn.Module) -> float:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total / 2**20


def clock(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds of this process, wall seconds)."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# -- speed -----------------------------------------------------------------------------------------


class Pipeline:
    """The stages of one model's ``predict --clips 1`` on one file."""

    def __init__(self, name: str, path: Path, variants: list[str]):
        torch.manual_seed(0)
        base = create_model(name, num_classes=527).eval()
        with torch.no_grad():  # the classifier starts at zero: re-draw it so that scores differ
            for head in base.heads().values():
                head.weight.normal_(0, 0.02)
        self.name, self.path = name, path
        self.clip = ClipConfig.from_model(base.cfg, eval_clips=1, eval_crops=1)
        self.proc = ClipProcessor(self.clip, train=False)
        self.variants: dict[str, torch.nn.Module] = {}
        self.weights: dict[str, float] = {}
        state = base.state_dict()
        for v in variants:
            m = create_model(name, num_classes=527)
            m.load_state_dict(state)
            self.variants[v] = prepare(m, v)
            self.weights[v] = weights_mib(self.variants[v])
        del base, state
        gc.collect()

    def decode(self) -> Any:
        seg = FileSegment(str(self.path), None, None, self.clip)
        centre = self.proc.centres(seg)[0]
        return seg.decode(self.clip.video_times(centre), self.clip.audio_span(centre))

    def transforms(self, d: Any) -> dict[str, torch.Tensor]:
        c = self.clip
        frames = torch.from_numpy(d.video).view(1, c.num_frames, *d.video.shape[1:])  # (1, T, H, W, 3)
        wav = np.zeros(c.audio_samples, np.float32)
        wav[:min(len(d.audio), c.audio_samples)] = d.audio[:c.audio_samples]
        return {"video": self.proc.video_views(frames),  # (1, 3, T, h, w)
                "audio": self.proc.audio_views(torch.from_numpy(wav)[None])}  # (1, T_a, F)


def run_speed(args: argparse.Namespace, clip: Path) -> dict[str, Any]:
    pipes = [Pipeline(name, clip, args.variants) for name in args.models]
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    stages: dict[str, dict[str, list[float]]] = {p.name: {"decode_cpu": [], "decode_wall": [], "transforms_cpu": [],
                                                          "transforms_wall": []} for p in pipes}
    inputs = {p.name: p.transforms(p.decode()) for p in pipes}
    quality: dict[str, dict[str, Any]] = {}
    compile_s: dict[str, float] = {}
    load_start = load_average()
    with torch.inference_mode():
        for p in pipes:  # warm-up round: compiles, and every variant's scores on this clip
            ref = None
            for v, m in p.variants.items():
                out, _, wall = clock(lambda: m(inputs[p.name]))
                probs = out.logits.float().sigmoid()
                print(f"  warm-up {p.name} {v}: {wall:.1f} s", file=sys.stderr, flush=True)
                if "compile" in v:
                    compile_s[f"{p.name} {v}"] = wall
                if ref is None:
                    ref = probs
                quality[f"{p.name} {v}"] = {"max_score_diff": float((probs - ref).abs().max()),
                                            "same_top1": bool(probs.argmax() == ref.argmax()),
                                            "inference": fast.inference_settings(m)}
        for r in range(args.rounds):
            for p in pipes:
                d, c, w = clock(p.decode)
                s = stages[p.name]
                s["decode_cpu"].append(c)
                s["decode_wall"].append(w)
                x, c, w = clock(lambda: p.transforms(d))
                s["transforms_cpu"].append(c)
                s["transforms_wall"].append(w)
                for v, m in p.variants.items():
                    _, c, w = clock(lambda: m(x))
                    row = rows.setdefault((p.name, v), {"cpu": [], "wall": []})
                    row["cpu"].append(c)
                    row["wall"].append(w)
                    print(f"  round {r} {p.name} {v}: {w:.2f} s (cpu {c:.2f} s)", file=sys.stderr, flush=True)
        peaks = {}
        for p in pipes:
            for v, m in p.variants.items():
                gc.collect()
                peaks[(p.name, v)] = measure_peak(lambda: m(inputs[p.name])).mib
    load_end = load_average()
    results = []
    for p in pipes:
        s = stages[p.name]
        for v in p.variants:
            row = rows[(p.name, v)]
            e2e_cpu = [a + b + c for a, b, c in zip(s["decode_cpu"], s["transforms_cpu"], row["cpu"])]
            e2e_wall = [a + b + c for a, b, c in zip(s["decode_wall"], s["transforms_wall"], row["wall"])]
            results.append({"model": p.name, "variant": v, "inference": quality[f"{p.name} {v}"]["inference"],
                            "decode_cpu_s": summary(s["decode_cpu"]), "decode_wall_s": summary(s["decode_wall"]),
                            "transforms_cpu_s": summary(s["transforms_cpu"]),
                            "transforms_wall_s": summary(s["transforms_wall"]),
                            "model_cpu_s": summary(row["cpu"]), "model_wall_s": summary(row["wall"]),
                            "end_to_end_cpu_s": summary(e2e_cpu), "end_to_end_wall_s": summary(e2e_wall),
                            "step_peak_mib": peaks[(p.name, v)], "weights_mib": p.weights[v],
                            "compile_s": compile_s.get(f"{p.name} {v}"),
                            "max_score_diff_vs_eager": quality[f"{p.name} {v}"]["max_score_diff"],
                            "same_top1_as_eager": quality[f"{p.name} {v}"]["same_top1"],
                            "times_cpu_s": row["cpu"], "times_wall_s": row["wall"]})
    return {"rounds": args.rounds, "load_start": load_start, "load_end": load_end, "results": results}


def speed_table(speed: dict[str, Any]) -> str:
    lines = ["| model | variant | decode ms | transforms ms | model s (CPU, median) | range | model s (wall) "
             "| end to end s (wall) | vs eager (CPU) | step peak MiB | weights MiB | score diff vs eager |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["model"]: r["model_cpu_s"]["median"] for r in speed["results"] if r["variant"] == "eager"}
    for r in speed["results"]:
        m, wm = r["model_cpu_s"], r["model_wall_s"]
        ratio = f"{base[r['model']] / m['median']:.2f}x" if r["model"] in base else "-"
        variant = r["variant"] + ("" if r["inference"]["compile"] in ("off", "on") else f" ({r['inference']['compile']})")
        lines.append(f"| `{r['model']}` | {variant} | {1e3 * r['decode_cpu_s']['median']:.0f} "
                     f"| {1e3 * r['transforms_cpu_s']['median']:.0f} | {m['median']:.2f} | {m['min']:.2f}-{m['max']:.2f} "
                     f"| {wm['median']:.2f} | {r['end_to_end_wall_s']['median']:.2f} | {ratio} "
                     f"| {r['step_peak_mib']:.0f} | {r['weights_mib']:.0f} | {r['max_score_diff_vs_eager']:.1e} |")
    return "\n".join(lines)


# -- quality on the demo's test split ---------------------------------------------------------------------


def demo_models(args: argparse.Namespace) -> tuple[dict[str, Path], Path, Path]:
    """(name -> model dir, test shards, labels.csv): the demo's own, or a reduced demo trained now."""
    from avfusion.data.manifest import LabelMap
    from avfusion.demo import run as demo

    ready = Path(args.demo_models)
    root = ready.parent / "avdigits"
    if all((ready / n / "model.safetensors").is_file() for n in DEMO_MODELS) and (root / "shards" / "test").is_dir():
        print(f"quality: the demo's trained models in {ready}", file=sys.stderr)
        return {n: ready / n for n in DEMO_MODELS}, root / "shards" / "test", root / "labels.csv"
    out = Path(args.demo_cache) if args.demo_cache else Path(tempfile.mkdtemp(prefix="avf_demo_"))
    s = demo.DemoSettings(out=str(out), steps=args.demo_steps, models=DEMO_MODELS, jobs=2, predict_bigbuckbunny=False)
    root = out / "avdigits"
    demo._data(s, root)  # noqa: SLF001 - the demo's own steps, as avfusion demo runs them
    labels = LabelMap.read(root / "labels.csv", "single")
    probe = create_model("mbt_tiny", num_classes=10, task="single", **demo.INPUTS).cfg
    shards = demo._prepare(root, labels, ClipConfig.from_model(probe))  # noqa: SLF001
    models_dir = out / "models"
    if not all((models_dir / n / "model.safetensors").is_file() for n in DEMO_MODELS):
        print(f"quality: training {', '.join(DEMO_MODELS)} for {args.demo_steps} steps in {out}", file=sys.stderr)
        demo._train_all(s, shards["train"], root / "labels.csv", models_dir)  # noqa: SLF001
    return {n: models_dir / n for n in DEMO_MODELS}, shards["test"], root / "labels.csv"


def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    from avfusion.data.manifest import LabelMap
    from avfusion.data.shards import ShardSamples

    dirs, test, labels_csv = demo_models(args)
    labels = LabelMap.read(labels_csv, "single")
    long, fast.LONG = fast.LONG, 0  # tiny models' sequences are short: force bf16+compile's blocked attention on
    out: dict[str, Any] = {"forced_blocked_attention": True, "models": {}}
    for name, path in dirs.items():
        ref_model = load_pretrained(path)
        data = ShardSamples(test, labels, ClipConfig.from_model(ref_model.cfg, eval_clips=1, eval_crops=1), train=False)
        samples = [data[i] for i in range(len(data))]
        targets = torch.tensor([int(s["label"]) for s in samples])
        batches = [samples[i:i + 50] for i in range(0, len(samples), 50)]
        rows = {}
        ref_probs = None
        for v in ["eager", *[v for v in args.variants if v != "eager"]]:
            m = prepare(load_pretrained(path), v)
            probs = []
            with torch.inference_mode():
                for b in batches:  # each sample holds one clip: (1, ...) -> stack to (B, ...)
                    x = {k: torch.cat([s[k] for s in b]) for k in ("video", "audio")}
                    probs.append(m(x).logits.float().softmax(-1))
            p = torch.cat(probs)  # (N, C)
            if ref_probs is None:
                ref_probs = p
            onehot = torch.nn.functional.one_hot(targets, p.shape[1]).float()
            rows[v] = {"top1": float((p.argmax(1) == targets).float().mean()),
                       "mAP": float(mean_average_precision(p, onehot)["mAP"]),
                       "agreement": float((p.argmax(1) == ref_probs.argmax(1)).float().mean()),
                       "max_score_diff": float((p - ref_probs).abs().max()),
                       "inference": fast.inference_settings(m)}
            print(f"  quality {name} {v}: {rows[v]}", file=sys.stderr, flush=True)
        out["models"][name] = {"clips": len(samples), "variants": rows}
    fast.LONG = long
    return out


def quality_table(q: dict[str, Any]) -> str:
    lines = ["| model | variant | top-1 | change | mAP | change | top-1 agreement with fp32 | max score difference |",
             "|---|---|---|---|---|---|---|---|"]
    for name, res in q["models"].items():
        ref = res["variants"]["eager"]
        for v, r in res["variants"].items():
            lines.append(f"| `{name}` | {v} | {r['top1']:.3f} | {r['top1'] - ref['top1']:+.3f} | {r['mAP']:.4f} "
                         f"| {r['mAP'] - ref['mAP']:+.4f} | {100 * r['agreement']:.1f}% | {r['max_score_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mbt_base,zorro_vit_base")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"among {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-quality", action="store_true", help="speed only")
    p.add_argument("--quality-only", action="store_true", help="the demo's test split only")
    p.add_argument("--demo-models", default="runs/demo/models", help="the demo's trained models (default %(default)s)")
    p.add_argument("--demo-cache", default=None, help="where to train (and keep) the reduced demo when there is none")
    p.add_argument("--demo-steps", type=int, default=600, help="training steps of the reduced demo (default 600)")
    p.add_argument("--json", default=None, help="write everything measured to this file")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose among {VARIANTS}")
    if "eager" not in args.variants:
        args.variants.insert(0, "eager")
    args.variants.sort(key=VARIANTS.index)
    if "bf16" in " ".join(args.variants) and fast.cpu_bf16() is None:
        print("this CPU has no AVX512-BF16 / AMX: bf16 variants left out", file=sys.stderr)
        args.variants = [v for v in args.variants if not v.startswith("bf16")]
    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 64  # several compiled models share code objects here
    torch._dynamo.config.accumulated_recompile_limit = 1024
    warnings.filterwarnings("ignore", category=UserWarning)
    res: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(args).items()}}
    print(f"machine: {res['machine']}")
    if not args.quality_only:
        with tempfile.TemporaryDirectory() as tmp:
            clip = make_clips(Path(tmp), 1, 10.0, (640, 360))[0].path
            res["speed"] = run_speed(args, Path(clip))
        print(f"\nload average at start {res['speed']['load_start']}, at end {res['speed']['load_end']}; "
              f"{args.rounds} rounds\n")
        print(speed_table(res["speed"]))
    if not args.no_quality:
        res["quality"] = run_quality(args)
        print("\nquality on the demo's test split (tiny models; blocked attention forced on for bf16+compile)\n")
        print(quality_table(res["quality"]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
