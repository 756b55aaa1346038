#!/usr/bin/env python
"""Float32 CPU GEMMs of a ViT-B layer: torch's BLAS (MKL) against oneDNN, per product.

``avfusion.layers.Linear`` runs each float32 CPU product on the backend a trial at its first use
found fastest (``AVFUSION_CPU_GEMM=auto``, the default; avfusion.layers.gemm_tune), or forced:
``onednn``, or ``aten`` as ``nn.Linear`` does (MKL in the official wheels). This script shows
which is faster on the machine it runs on, and what the trial chose, for the shapes of an
MBT-B / Zorro-B training step:
tokens M (785: 8 frames of 224^2 + CLS; 401: 800 x 128 spectrogram + CLS) x the four ViT-B
linear layers (qkv 768 -> 2304, proj 768 -> 768, fc1 768 -> 3072, fc2 3072 -> 768), and for each
of the three products of a training step:

- ``fwd``   y = x W^T + b      (M, K) x (N, K)^T
- ``dgrad`` dx = dy W          (M, N) x (N, K)
- ``wgrad`` dW = dy^T x        (N, M) x (M, K)

and for the whole layer (forward + backward through ``avfusion.layers.Linear`` with each setting,
``auto`` included: its choices, measured afresh in a temporary ``AVFUSION_HOME``, are printed as
``a`` / ``o`` for aten / oneDNN, forward, input gradient, weight gradient).
With ``--xla`` (run it with the peers' venv, which has JAX: ../shared/peers/README.md) the same
three products jitted in JAX are added: what XLA's CPU GEMMs reach, the official Flax MBT's side.
Each timed call uses a different weight from a ring of ``--ring`` (12) so weights come from memory
as in a model, not from cache. Reported: GFLOP/s (median of ``--reps`` rounds), and the ratio.

    taskset -c 0,1 python benchmarks/cpu_gemm.py --threads 2 --out benchmarks/results/cpu_gemm_t2.json
    taskset -c 0 python benchmarks/cpu_gemm.py --threads 1 --out benchmarks/results/cpu_gemm_t1.json
    PYTHONPATH=src taskset -c 0,1 ../peers-venv/bin/python benchmarks/cpu_gemm.py --threads 2 --xla
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from avfusion.layers import linear as linear_mod
from avfusion.layers.gemm_tune import TUNER, product_key
from avfusion.layers.linear import Linear, _mm, set_cpu_gemm

SHAPES = [(m, k, n) for m in (785, 401) for (k, n) in ((768, 2304), (768, 768), (768, 3072), (3072, 768))]


def _rate(fn: Callable[[int], object], flops: float, ring: int, reps: int) -> float:
    """Median GFLOP/s of ``reps`` rounds, each calling fn(i) for every i of the ring once."""
    fn(0)
    fn(1)
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        for i in range(ring):
            fn(i)
        rates.append(flops * ring / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def _xla_rates(xs, ws, gys, f: float, ring: int, reps: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    jx, jw, jg = ([jnp.asarray(t.numpy()) for t in ts] for ts in (xs, ws, gys))
    fwd, dgrad, wgrad = jax.jit(lambda x, w: x @ w.T), jax.jit(lambda g, w: g @ w), jax.jit(lambda g, x: g.T @ x)
    return {
        "fwd xla": _rate(lambda i: fwd(jx[i], jw[i]).block_until_ready(), f, ring, reps),
        "dgrad xla": _rate(lambda i: dgrad(jg[i], jw[i]).block_until_ready(), f, ring, reps),
        "wgrad xla": _rate(lambda i: wgrad(jg[i], jx[i]).block_until_ready(), f, ring, reps),
    }


def measure(m: int, k: int, n: int, ring: int, reps: int, xla: bool = False) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(n, k, generator=g) for _ in range(ring)]
    bs = [torch.randn(n, generator=g) for _ in range(ring)]
    xs = [torch.randn(m, k, generator=g) for _ in range(ring)]
    gys = [torch.randn(m, n, generator=g) for _ in range(ring)]
    f = 2.0 * m * k * n
    onednn = torch.ops.mkldnn._linear_pointwise
    out = {
        "fwd aten": _rate(lambda i: torch.addmm(bs[i], xs[i], ws[i].t()), f, ring, reps),
        "fwd onednn": _rate(lambda i: onednn(xs[i], ws[i], bs[i], "none", [], ""), f, ring, reps),
        "dgrad aten": _rate(lambda i: gys[i] @ ws[i], f, ring, reps),
        "dgrad onednn": _rate(lambda i: _mm(gys[i], ws[i].t()), f, ring, reps),
        "wgrad aten": _rate(lambda i: gys[i].t() @ xs[i], f, ring, reps),
        "wgrad onednn": _rate(lambda i: _mm(gys[i].t(), xs[i].t()), f, ring, reps),
    }
    if xla:
        out.update(_xla_rates(xs, ws, gys, f, ring, reps))
    layers = [Linear(k, n) for _ in range(ring)]
    xg = [x.clone().requires_grad_() for x in xs]

    def layer_step(i: int) -> None:
        layers[i](xg[i]).backward(gys[i])

    for backend in ("aten", "onednn", "auto"):
        previous = set_cpu_gemm(backend)
        try:
            out[f"layer {backend}"] = _rate(layer_step, 3 * f, ring, reps)
        finally:
            set_cpu_gemm(previous)
    out["auto chose"] = "".join(TUNER.known(product_key(d, m, k, n, bias=True))[0] for d in ("fwd", "dgrad", "wgrad"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--ring", type=int, default=12)
    p.add_argument("--xla", action="store_true", help="add JAX / XLA's products (needs jax)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.xla:  # before jax is imported: XLA's thread pool as the shared harness sets it
        os.environ["JAX_PLATFORMS"] = "cpu"
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        if "jax" in sys.modules:
            raise SystemExit("jax was imported before the thread settings")
    if not linear_mod._ONEDNN:
        raise SystemExit("this torch has no oneDNN linear: nothing to compare")
    os.environ["AVFUSION_HOME"] = tempfile.mkdtemp(prefix="avfusion-cpu-gemm-")  # auto measures afresh
    TUNER.reset()
    rows = []
    print(f"threads {args.threads}; GFLOP/s, median of {args.reps} rounds over a ring of {args.ring} weights")
    xcol = " XLA |" if args.xla else ""
    print("| M x K -> N | product | aten (MKL) | oneDNN | oneDNN / aten |" + xcol + " auto |")
    print("|---|---|---|---|---|" + ("---|" if args.xla else "") + "---|")
    for m, k, n in SHAPES:
        r = measure(m, k, n, args.ring, args.reps, args.xla)
        for what in ("fwd", "dgrad", "wgrad", "layer"):
            a, o, x = r[f"{what} aten"], r[f"{what} onednn"], r.get(f"{what} xla")
            rows.append(dict(m=m, k=k, n=n, product=what, aten_gflops=a, onednn_gflops=o, ratio=o / a, xla_gflops=x))
            xcell = "" if not args.xla else (f" {x:.0f} |" if x is not None else " - |")
            auto = f" {r['layer auto']:.0f} ({r['auto chose']}) |" if what == "layer" else " |"
            if what == "layer":
                rows[-1].update(auto_gflops=r["layer auto"], auto_chose=r["auto chose"])
            print(f"| {m} x {k} -> {n} | {what} | {a:.0f} | {o:.0f} | {o / a:.2f}x |" + xcell + auto, flush=True)
    layer = [r["ratio"] for r in rows if r["product"] == "layer"]
    print(f"whole layer (fwd + bwd), geometric mean oneDNN / aten: {statistics.geometric_mean(layer):.2f}x")
    auto = [r["auto_gflops"] / r["aten_gflops"] for r in rows if r["product"] == "layer"]
    print(f"whole layer (fwd + bwd), geometric mean auto / aten: {statistics.geometric_mean(auto):.2f}x")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(threads=args.threads, torch=torch.__version__, machine=platform.processor() or
                           platform.machine(), rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
