#!/usr/bin/env python
"""MBT-B forward side by side with the official Flax MBT, at every avfusion precision, in ONE process.

The shared harness ``../shared/peers/bench_side.py`` (its README: set-up, the venv with JAX / Flax
and scenic's MBT source) times avfusion's ``mbt_base`` as loaded against scenic's MBT; this script
does the same for its ``mbt_fwd`` workload, the same way, with avfusion's prepared variants
(avfusion.infer.fast.prepare_for_inference) as further participants:

- ``scenic``: the official Flax MBT (scenic ``projects/mbt``, copied under ``../shared/peers/scenic``),
  ``jax.jit(apply, train=False)``, float32, randomly initialised (its zero-initialised output
  projection re-drawn, so outputs are not constant);
- ``avfusion``: ``mbt_base`` loaded strictly with scenic's weights converted by avfusion's converter
  (avfusion.convert.convert_scenic_mbt), eager, ``torch.inference_mode`` (the harness's participant);
- ``avf_fp32``, ``avf_bf16``, ``avf_int8``, ``avf_fp32_compile``, ``avf_bf16_compile``: the same
  weights through ``prepare_for_inference(model, precision, compile)``, what ``avfusion predict
  --precision P [--compile]`` runs.

Inputs: batch 1, 32 frames of 224 x 224 + an 800 x 128 spectrogram (``--frames``,
``--spec-frames``); scenic gets the same tensors in its layout. Before timing, every participant's
logits are compared with scenic's. Thread settings are applied before torch and JAX are imported
(``--threads 1``: OMP / MKL at 1, XLA without its Eigen thread pool; run under ``taskset -c 0``).
Each participant is called ``--warmup`` times untimed, round robin (a first call that compiles is
timed as compile_s), then ``--reps`` rounds of A, B, C ...: each timed call records wall time, the
process's CPU time (getrusage) and the peak RSS it added (VmHWM after /proc/self/clear_refs, minus
VmRSS before; heap trimmed first). Reported: medians, ranges, and ratios scenic / participant.

    taskset -c 0 ../peers-venv/bin/python benchmarks/side_by_side.py --threads 1 --reps 5 --warmup 1 \\
        --out benchmarks/results/side_by_side_t1.json
    ../peers-venv/bin/python benchmarks/side_by_side.py --tiny --threads 1 --reps 1 --warmup 1 --out /tmp/s.json

(with ``PYTHONPATH=src`` when avfusion is installed elsewhere in that venv).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "bf16", "int8", "fp32+compile", "bf16+compile")

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--threads", type=int, required=True)
p.add_argument("--reps", type=int, default=5)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--frames", type=int, default=32)
p.add_argument("--spec-frames", type=int, default=800)
p.add_argument("--variants", default=",".join(VARIANTS), help=f"avfusion variants among {', '.join(VARIANTS)}")
p.add_argument("--peers", default=str(ROOT.parent / "shared" / "peers"), help="the shared harness folder")
p.add_argument("--tiny", action="store_true", help="smoke test: width 64, 4 layers, 4 heads, 64x64 frames")
p.add_argument("--out", required=True)
args = p.parse_args()

N = str(args.threads)
THREAD_ENV = {"OMP_NUM_THREADS": N, "MKL_NUM_THREADS": N, "OPENBLAS_NUM_THREADS": N, "JAX_PLATFORMS": "cpu"}
if args.threads == 1:
    THREAD_ENV["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ.update(THREAD_ENV)
sys.path[:0] = [os.path.join(args.peers, "stubs"), os.path.join(args.peers, "scenic")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)
torch._dynamo.config.recompile_limit = 64  # two compiled copies of one model share code objects

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from scenic.projects.mbt import model as scenic_mbt  # noqa: E402

import avfusion  # noqa: E402
from avfusion.convert.scenic_mbt import convert_scenic_mbt  # noqa: E402
from avfusion.infer import fast  # noqa: E402

LIBC = ctypes.CDLL("libc.so.6")
DIMS = dict(D=64, L=4, H=4, MLP=256, LF=2, IMG=64) if args.tiny else dict(D=768, L=12, H=12, MLP=3072, LF=8, IMG=224)
NCLS, MEL = 527, 128


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def trim() -> None:
    gc.collect()
    LIBC.malloc_trim(0)


def scenic_model():
    """The harness's scenic MBT (bench_side.py scenic_model)."""
    d = DIMS
    patches = ml_collections.ConfigDict({"size": [16, 16, 2]})
    tec = ml_collections.ConfigDict({"method": "3d_conv", "kernel_init_method": "central_frame_initializer",
                                     "n_sampled_frames": 4})
    return scenic_mbt.MBT(
        mlp_dim=d["MLP"], num_layers=d["L"], num_heads=d["H"], num_classes=NCLS, patches=patches,
        hidden_size=d["D"], temporal_encoding_config=tec,
        attention_config=ml_collections.ConfigDict({"type": "spacetime"}), representation_size=None,
        dropout_rate=0.0, attention_dropout_rate=0.0, stochastic_droplayer_rate=0.0, classifier="token",
        modality_fusion=("spectrogram", "rgb"), fusion_layer=d["LF"], use_bottleneck=True,
        n_bottlenecks=4, test_with_bottlenecks=True, share_encoder=False, dtype=jnp.float32)


class Part:
    def __init__(self, name: str, step, info: dict, block=None) -> None:
        self.name, self.step, self.info = name, step, info
        self.block = block or (lambda r: r)
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.peak_mib: list[float] = []
        self.compile_s: float | None = None

    def call(self):
        r = self.step()
        self.block(r)
        return r


def build() -> tuple[list[Part], dict]:
    d = DIMS
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, 3, args.frames, d["IMG"], d["IMG"], generator=g)
    audio = torch.randn(1, args.spec_frames, MEL, generator=g)
    x_jax = {"rgb": jnp.asarray(video.permute(0, 2, 3, 4, 1).numpy()),
             "spectrogram": jnp.asarray(np.repeat(audio.numpy()[..., None], 3, axis=-1))}  # scenic tiles to 3 ch
    fm = scenic_model()
    params = jax.jit(lambda k, x: fm.init(k, x, train=False))(jax.random.PRNGKey(0), x_jax)["params"]
    params = flax.core.unfreeze(params)
    k = params["output_projection"]["kernel"]  # zero-initialised upstream: re-drawn so outputs differ
    params["output_projection"]["kernel"] = 0.02 * jax.random.normal(jax.random.PRNGKey(1), k.shape, k.dtype)
    jax.block_until_ready(params)
    tree = jax.tree_util.tree_map(lambda a: np.asarray(a), flax.core.unfreeze(params))
    over = dict(num_classes=NCLS, fusion_layer=d["LF"], num_frames=args.frames, spec_size=(args.spec_frames, MEL))
    if args.tiny:
        over.update(embed_dim=d["D"], depth=d["L"], num_heads=d["H"], mlp_dim=d["MLP"], image_size=(d["IMG"], d["IMG"]))
    state = convert_scenic_mbt({"params": tree}, fusion_layer=d["LF"], num_frames=args.frames,
                               image_size=(d["IMG"], d["IMG"]), spec_size=(args.spec_frames, MEL)).state_dict()
    del tree
    inputs = {"video": video, "audio": audio}
    fwd = jax.jit(lambda prm, x: fm.apply({"params": prm}, x, train=False))
    t0 = time.perf_counter()
    ref = np.asarray(fwd(params, x_jax))  # first call: XLA compile + run
    scenic_compile = time.perf_counter() - t0
    parts = [Part("scenic", lambda: fwd(params, x_jax), {"mode": "jax.jit"}, block=jax.block_until_ready)]
    parts[0].compile_s = scenic_compile
    checks = {}
    for v in ["eager", *[v for v in args.variants.split(",") if v]]:
        m = avfusion.create_model("mbt_base", **over)
        m.load_state_dict(state, strict=True)
        m.eval()
        if v != "eager":
            precision, _, compiled = v.partition("+")
            m = fast.prepare_for_inference(m, precision, compile=bool(compiled))
        name = "avfusion" if v == "eager" else "avf_" + v.replace("+", "_")

        def step(m=m):
            with torch.inference_mode():
                return m(inputs).logits

        part = Part(name, step, {"variant": v, "inference": fast.inference_settings(m)})
        t0 = time.perf_counter()
        out = part.call().float().numpy()  # compiles where it compiles
        if "compile" in v:
            part.compile_s = time.perf_counter() - t0
        part.info["inference"] = fast.inference_settings(m)
        checks[name] = {"max_abs_logit_diff_vs_scenic": float(np.abs(out - ref).max()),
                        "max_abs_logit": float(np.abs(ref).max()),
                        "same_top1": bool(out.argmax() == ref.argmax()),
                        "top5_overlap": len(set(np.argsort(-out[0])[:5]) & set(np.argsort(-ref[0])[:5]))}
        parts.append(part)
        print(f"  check {name}: {checks[name]}", flush=True)
    del state
    trim()
    return parts, checks


def run(parts: list[Part]) -> dict:
    la0 = os.getloadavg()
    for i in range(args.warmup):
        for p_ in parts:
            t0 = time.perf_counter()
            p_.call()
            print(f"  warm-up {i} {p_.name}: {time.perf_counter() - t0:.2f}s", flush=True)
    for r in range(args.reps):
        for p_ in parts:
            trim()
            rss0 = status_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            c0 = cpu_s()
            t0 = time.perf_counter()
            p_.call()
            dt, dc = time.perf_counter() - t0, cpu_s() - c0
            peak = status_kib("VmHWM")
            p_.times.append(dt)
            p_.cpu.append(dc)
            p_.peak_mib.append(max(peak - rss0, 0) / 1024)
            print(f"  rep {r} {p_.name}: {dt:.2f}s (cpu {dc:.2f}s, +{(peak - rss0) / 1024:.0f} MiB)", flush=True)
    la1 = os.getloadavg()
    rows = [dict(participant=p_.name, info=p_.info, times_s=p_.times, cpu_s=p_.cpu,
                 median_s=statistics.median(p_.times), min_s=min(p_.times), max_s=max(p_.times),
                 cpu_median_s=statistics.median(p_.cpu), peak_step_mib=p_.peak_mib, compile_s=p_.compile_s)
            for p_ in parts]
    return dict(rows=rows, loadavg_start=la0, loadavg_end=la1)


def main() -> None:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    res = dict(args=vars(args), thread_env=THREAD_ENV, torch_threads=torch.get_num_threads(),
               affinity=sorted(os.sched_getaffinity(0)), uptime_start=uptime,
               versions=dict(python=platform.python_version(), torch=torch.__version__, jax=jax.__version__,
                             flax=flax.__version__, avfusion_commit=subprocess.run(
                                 ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()),
               cpu=fast.cpu_bf16(), cpu_int8=fast.cpu_int8())
    print(json.dumps({k: res[k] for k in ("thread_env", "torch_threads", "affinity", "uptime_start")}), flush=True)
    parts, res["checks"] = build()
    res["workload"] = run(parts)
    res["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    res["vmhwm_process_mib"] = status_kib("VmHWM") / 1024
    Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    rows = {r["participant"]: r for r in res["workload"]["rows"]}
    sc = rows["scenic"]
    print(f"\nMBT-B forward, {args.frames} frames + {args.spec_frames}x{MEL}, batch 1, threads {args.threads}; "
          f"{res['uptime_start']} -> {res['uptime_end']}")
    print("| participant | median s (wall) | range | CPU s (median) | scenic / this: wall | CPU | min | "
          "step peak MiB | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res["workload"]["rows"]:
        print(f"| {r['participant']} | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | {r['cpu_median_s']:.2f} "
              f"| {sc['median_s'] / r['median_s']:.2f}x | {sc['cpu_median_s'] / r['cpu_median_s']:.2f}x "
              f"| {sc['min_s'] / r['min_s']:.2f}x | {max(r['peak_step_mib']):.0f} "
              f"| {'-' if r['compile_s'] is None else format(r['compile_s'], '.0f')} |")


if __name__ == "__main__":
    main()
