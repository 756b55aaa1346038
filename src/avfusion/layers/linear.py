"""``Linear``: ``nn.Linear`` whose float32 CPU products run on oneDNN, forward and backward.

PyTorch sends a float32 ``nn.Linear`` on the CPU to its BLAS (MKL in the official wheels), and
only bfloat16 / reduced-precision float32 to oneDNN. On the AMD EPYC (Zen 4) this project is
measured on, MKL's float32 GEMMs at ViT-B shapes are behind oneDNN's (and XLA's, the official Flax
MBT's side), most of all the forward product x W^T: 126-155 against 173-184 GFLOP/s at 785 tokens
and 2 threads (benchmarks/cpu_gemm.py). So the forward and the input gradient run on oneDNN; the
weight gradient only where the layer narrows (N <= K), since oneDNN's call needs a transposed copy
of the output gradient, which costs more than it saves when that gradient is the larger operand.
These GEMMs are ~3/4 of an MBT-B training step; the step is 1.06-1.13x faster (benchmarks/README.md,
"Training step on CPU").

The module is an ``nn.Linear`` (same parameters, state dict, init, repr); only the product
changes, and only where it is exact float32 and helps:

- a CPU float32 input and weight, outside autocast (autocast keeps torch's casting rules),
  outside ``torch.compile`` / ``torch.export`` / tracing (the compiler picks its own kernels and
  must see a plain ``linear``), and with at least :data:`MIN_MACS` multiply-adds (oneDNN's call
  costs ~13 us more than MKL's, which tiny layers would feel);
- ``set_cpu_gemm("aten")`` or the environment variable ``AVFUSION_CPU_GEMM=aten`` turns it off
  (every call is then ``nn.Linear``'s): for CPUs where MKL is the faster one; compare with
  ``python benchmarks/cpu_gemm.py``.

Results equal ``nn.Linear``'s within float32 rounding (another summation order; relative error
~1e-6, tests/layers/test_linear.py), the gradients too; the backward computes only the gradients
autograd asks for (a frozen weight gets no weight-gradient product).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from avfusion.errors import ConfigError

CPU_GEMMS: tuple[str, ...] = ("onednn", "aten")
MIN_MACS = 1 << 22  # below ~4M multiply-adds oneDNN's per-call overhead outweighs its faster kernel


def _check(name: str) -> str:
    if name not in CPU_GEMMS:
        raise ConfigError(f"AVFUSION_CPU_GEMM / set_cpu_gemm: expected one of {CPU_GEMMS}, got {name!r}")
    return name


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


# Read from AVFUSION_CPU_GEMM at first use, not at import: a bad value is then a ConfigError raised
# inside a command, which the CLI reports in one line.
_CPU_GEMM: str | None = None
_ONEDNN = _onednn_available()


def _setting() -> str:
    global _CPU_GEMM
    if _CPU_GEMM is None:
        _CPU_GEMM = _check(os.environ.get("AVFUSION_CPU_GEMM", "onednn"))
    return _CPU_GEMM


def set_cpu_gemm(name: str) -> str:
    """Choose who computes float32 CPU ``Linear`` products: 'onednn' (default) or 'aten' (torch's
    BLAS, as ``nn.Linear``). Returns the previous choice."""
    global _CPU_GEMM
    previous, _CPU_GEMM = _setting(), _check(name)
    return previous


def cpu_gemm() -> str:
    """The backend float32 CPU ``Linear`` products use now ('aten' where oneDNN is missing)."""
    return _setting() if _ONEDNN else "aten"


def _mm(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a @ b_t^T on oneDNN: a (M, K) (copied contiguous if it is not), b_t (N, K) any strides -> (M, N)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if weight.requires_grad else None, weight if x.requires_grad else None)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # (..., N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1])  # (M, N)
        gx = gw = gb = None
        if need_x:
            gx = _mm(g, weight.t()).view(*grad.shape[:-1], weight.shape[1])  # (M, N) @ (N, K)
        if need_w:  # (N, M) @ (M, K)
            x2 = x.reshape(-1, x.shape[-1])
            # oneDNN wants g^T contiguous: a transposed copy of the (M, N) gradient, which costs more
            # than oneDNN saves when N > K (qkv, fc1); BLAS reads g^T in place (benchmarks/cpu_gemm.py)
            gw = _mm(g.t(), x2.t()) if g.shape[1] <= x2.shape[1] else g.t() @ x2
        if need_b and ctx.has_bias:
            gb = g.sum(0)
        return gx, gw, gb


class Linear(nn.Linear):
    """``nn.Linear`` with its float32 CPU products on oneDNN where that is exact and faster (module
    docstring). Everything else (parameters, init, state dict, other devices and dtypes) is
    ``nn.Linear``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onednn(x):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def _onednn(self, x: torch.Tensor) -> bool:
        # compiler / tracer first: under torch.export the shapes are symbolic, and a size test would
        # become a guard on the batch dimension
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        w = self.weight
        return (_ONEDNN and _setting() == "onednn" and x.dim() >= 2 and x.device.type == "cpu"
                and x.dtype == torch.float32 and w.dtype == torch.float32 and w.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu")
                and x.numel() * w.shape[0] >= MIN_MACS)
