"""``Linear``: ``nn.Linear`` whose float32 CPU products run on the backend measured fastest on this host.

PyTorch sends a float32 ``nn.Linear`` on the CPU to its BLAS (MKL in the official wheels), and
only bfloat16 / reduced-precision float32 to oneDNN. Which of the two is faster depends on the
CPU: on an AVX512 AMD EPYC oneDNN's float32 GEMMs at ViT-B shapes are 10-45% ahead of MKL's
(an MBT-B training step 1.06-1.13x faster), on an AVX2-only EPYC MKL is ahead in every product
at one thread (benchmarks/cpu_gemm.py, benchmarks/README.md "Training step on CPU"). So each of the three
products of a layer (forward ``x W^T + b``, input gradient ``dy W``, weight gradient ``dy^T x``)
runs on whichever backend a short trial at its first use found fastest, per shape and thread
count, and the choice is kept in the user's cache for later runs on the same host
(:mod:`avfusion.layers.gemm_tune`, which says how it is measured and stored).

The module is an ``nn.Linear`` (same parameters, state dict, init, repr); only the product
changes, and only where it is exact float32:

- a CPU float32 input (2-D or more) and weight, outside autocast (autocast keeps torch's casting
  rules), outside ``torch.compile`` / ``torch.export`` / tracing (the compiler picks its own
  kernels and must see a plain ``linear``); anything else is ``F.linear``;
- ``AVFUSION_CPU_GEMM`` (read at the first product; a bad value is a ``ConfigError`` then, not
  at import) or :func:`set_cpu_gemm` chooses: ``auto`` (default, measured), ``aten`` (every
  product is ``nn.Linear``'s) or ``onednn`` (every product on oneDNN, whatever its size);
- where every product a call needs is chosen ``aten``, the call is plain ``F.linear`` (no
  autograd-function overhead, bit for bit ``nn.Linear``); otherwise an autograd function runs each
  product on its backend, and computes only the gradients autograd asks for. Its ``aten`` products
  are the very calls ``nn.Linear``'s autograd makes, so the result does not depend on which path
  carried it.

Results equal ``nn.Linear``'s within float32 rounding (oneDNN sums in another order; relative
error ~1e-6, tests/layers/test_linear.py), not bit for bit: a run resumed on the same host reads
the same choices back from the cache, so it continues exactly; on another CPU it continues within
rounding, as it would with ``AVFUSION_CPU_GEMM`` changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from avfusion.errors import ConfigError
from avfusion.layers.gemm_tune import BACKENDS, TUNER, clock, product_key
from avfusion.utils.cpu import onednn_linear

CPU_GEMMS: tuple[str, ...] = ("auto", *BACKENDS)


def _check(name: str) -> str:
    if name not in CPU_GEMMS:
        raise ConfigError(f"AVFUSION_CPU_GEMM / set_cpu_gemm: expected one of {CPU_GEMMS}, got {name!r}")
    return name


# Read from AVFUSION_CPU_GEMM at first use, not at import: a bad value is then a ConfigError raised
# inside a command, which the CLI reports in one line.
_CPU_GEMM: str | None = None
_ONEDNN = onednn_linear()


def _setting() -> str:
    global _CPU_GEMM
    if _CPU_GEMM is None:
        _CPU_GEMM = _check(os.environ.get("AVFUSION_CPU_GEMM", "auto"))
    return _CPU_GEMM


def set_cpu_gemm(name: str) -> str:
    """Choose who computes float32 CPU ``Linear`` products: 'auto' (default: the backend measured
    fastest per product, module docstring), 'aten' (torch's BLAS, as ``nn.Linear``) or 'onednn'
    (every product). Returns the previous setting."""
    global _CPU_GEMM
    previous, _CPU_GEMM = _setting(), _check(name)
    return previous


def cpu_gemm() -> str:
    """The setting float32 CPU ``Linear`` products use now ('aten' where oneDNN is missing)."""
    return _setting() if _ONEDNN else "aten"


def gemm_choices() -> dict[str, str]:
    """The backend chosen for each product key so far in this process (read from the cache or
    measured), e.g. ``{"fwd+b m861 k768 n2304 f32 t2": "aten", ...}``."""
    return dict(TUNER.choices)


def _mm(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a @ b_t^T on oneDNN: a (M, K) (copied contiguous if it is not), b_t (N, K) any strides -> (M, N)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], "")


# The three products on each backend. The aten ones are the calls nn.Linear's autograd makes
# (addmm's backward: dy @ W for the input, dy^T @ x for a row-major weight), hence bit-identical.
def _fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> dict:
    return {"aten": lambda: F.linear(x, w, b),
            "onednn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")}


def _dgrad(g: torch.Tensor, w: torch.Tensor) -> dict:  # (M, N) @ (N, K)
    return {"aten": lambda: g.mm(w), "onednn": lambda: _mm(g, w.t())}


def _wgrad(g: torch.Tensor, x: torch.Tensor) -> dict:  # (N, M) @ (M, K); oneDNN's includes copying dy^T
    return {"aten": lambda: g.t().mm(x), "onednn": lambda: _mm(g.t(), x.t())}


_FIXED_COST_S: float | None = None


def _path_cost_s() -> float:
    """What a call pays for going through the autograd function rather than ``F.linear`` (forward
    + backward of a tiny layer, fastest of interleaved rounds), measured once per process: a
    backend other than aten must beat it, or tiny layers would lose more than they gain."""
    global _FIXED_COST_S
    if _FIXED_COST_S is None:
        with torch.inference_mode(False), torch.enable_grad():  # no random numbers: a run's stream stays as it was
            x = torch.full((4, 8), 0.5, requires_grad=True)
            w = torch.full((8, 8), 0.25, requires_grad=True)
            plan = _Plan("aten", 4, 8, 8)
            calls = {"plain": lambda: F.linear(x, w).sum().backward(),
                     "function": lambda: _TunedLinear.apply(x, w, None, plan).sum().backward()}
            best = dict.fromkeys(calls, float("inf"))
            now = clock()
            for r in range(12):
                for name in (calls if r % 2 == 0 else reversed(calls)):
                    t = now()
                    for _ in range(4):
                        calls[name]()
                    if r >= 2:
                        best[name] = min(best[name], (now() - t) / 4)
        _FIXED_COST_S = max(0.0, best["function"] - best["plain"])
    return _FIXED_COST_S


@dataclass(frozen=True)
class _Plan:
    """How one call's products are chosen: a forced backend, or 'auto' by product key."""

    setting: str
    m: int
    k: int
    n: int

    def run(self, direction: str, runs: dict, bias: bool = False) -> torch.Tensor:
        if self.setting != "auto":
            return runs[self.setting]()
        return TUNER.decide(product_key(direction, self.m, self.k, self.n, bias), runs, _path_cost_s)


def _plan(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> _Plan | None:
    """None where the call is plain ``F.linear``; else how its products are chosen."""
    # compiler / tracer first: under torch.export the shapes are symbolic, and a size test would
    # become a guard on the batch dimension
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return None
    if not (_ONEDNN and x.dim() >= 2 and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and w.device.type == "cpu" and not torch.is_autocast_enabled("cpu")):
        return None
    setting = _setting()
    if setting == "aten" or x.numel() == 0:
        return None
    plan = _Plan(setting, x.numel() // x.shape[-1], w.shape[1], w.shape[0])
    if setting == "auto":
        grad = torch.is_grad_enabled()
        needed = [("fwd", b is not None)]
        needed += [("dgrad", False)] if grad and x.requires_grad else []
        needed += [("wgrad", False)] if grad and w.requires_grad else []
        if all(TUNER.known(product_key(d, plan.m, plan.k, plan.n, bias)) == "aten" for d, bias in needed):
            return None
        _path_cost_s()  # measured here, before any product of this call, not inside a backward
    return plan


class _TunedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: _Plan) -> torch.Tensor:
        ctx.save_for_backward(x if weight.requires_grad else None, weight if x.requires_grad else None)
        ctx.has_bias = bias is not None
        ctx.plan = plan
        return plan.run("fwd", _fwd(x, weight, bias), bias is not None)  # (..., N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1])  # (M, N)
        gx = gw = gb = None
        if need_x:
            gx = ctx.plan.run("dgrad", _dgrad(g, weight)).view(*grad.shape[:-1], weight.shape[1])
        if need_w:
            gw = ctx.plan.run("wgrad", _wgrad(g, x.reshape(-1, x.shape[-1])))
        if need_b and ctx.has_bias:
            gb = g.sum(0)
        return gx, gw, gb, None


class Linear(nn.Linear):
    """``nn.Linear`` with its float32 CPU products on the backend measured fastest for each
    (module docstring). Everything else (parameters, init, state dict, other devices and dtypes)
    is ``nn.Linear``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = _plan(x, self.weight, self.bias)
        if plan is None:
            return F.linear(x, self.weight, self.bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            return _TunedLinear.apply(x, self.weight, self.bias, plan)
        return plan.run("fwd", _fwd(x, self.weight, self.bias), self.bias is not None)
