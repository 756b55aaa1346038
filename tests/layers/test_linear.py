"""avfusion.layers.Linear: nn.Linear with its float32 CPU products on oneDNN (forward and backward)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avfusion.errors import ConfigError
from avfusion.layers import linear as linear_mod
from avfusion.layers.linear import Linear, cpu_gemm, set_cpu_gemm

pytestmark = pytest.mark.skipif(not linear_mod._ONEDNN, reason="this torch has no oneDNN linear")


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the oneDNN autograd function's forward calls."""
    calls: list[int] = []
    real = linear_mod._OneDNNLinear.apply

    def apply(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(linear_mod._OneDNNLinear, "apply", apply)
    return calls


def _pair(k: int, n: int, bias: bool = True) -> tuple[Linear, nn.Linear]:
    torch.manual_seed(0)
    fast = Linear(k, n, bias=bias)
    ref = nn.Linear(k, n, bias=bias)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(2, 300), (700,)])
@pytest.mark.parametrize("k,n", [(96, 200), (200, 96)])  # widening (weight gradient on BLAS) and narrowing (oneDNN)
def test_forward_and_gradients_match_nn_linear(monkeypatch: pytest.MonkeyPatch, lead: tuple[int, ...], k: int, n: int,
                                                bias: bool) -> None:
    calls = _counting(monkeypatch)
    fast, ref = _pair(k, n, bias)
    x = torch.randn(*lead, k)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), ref(xb)
    assert calls, "the oneDNN path did not run"
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    scale = yb.abs().max()
    assert ya.shape == yb.shape and (ya - yb).abs().max() <= 1e-5 * scale
    assert (xa.grad - xb.grad).abs().max() <= 1e-5 * xb.grad.abs().max()
    assert (fast.weight.grad - ref.weight.grad).abs().max() <= 1e-5 * ref.weight.grad.abs().max()
    if bias:
        assert torch.allclose(fast.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)


def test_non_contiguous_input_and_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    fast, ref = _pair(64, 256)
    base = torch.randn(2, 64, 600)
    xa = base.clone().requires_grad_()
    xb = base.clone().requires_grad_()
    ya = fast(xa.transpose(1, 2))  # (2, 600, 64), not contiguous
    yb = ref(xb.transpose(1, 2))
    g = torch.randn(2, 256, 600).transpose(1, 2)  # a non-contiguous incoming gradient
    ya.backward(g)
    yb.backward(g)
    assert calls
    assert torch.allclose(ya, yb, rtol=1e-5, atol=1e-4)
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=1e-4)
    assert torch.allclose(fast.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-3)


def test_only_the_gradients_asked_for() -> None:
    fast, _ = _pair(96, 200)
    fast.weight.requires_grad_(False)
    fast.bias.requires_grad_(False)
    x = torch.randn(700, 96, requires_grad=True)
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is None and fast.bias.grad is None
    fast.weight.requires_grad_(True)
    fast(torch.randn(700, 96)).sum().backward()  # an input without grad: only the weight's gradient
    assert fast.weight.grad is not None


def test_where_it_stays_nn_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    small = Linear(8, 8)
    small(torch.randn(4, 8))  # below MIN_MACS
    big = Linear(96, 200)
    big.double()(torch.randn(700, 96, dtype=torch.float64))  # float64
    big.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = big(torch.randn(700, 96))
    assert y.dtype == torch.bfloat16  # autocast's rules, not ours
    previous = set_cpu_gemm("aten")
    try:
        assert cpu_gemm() == "aten"
        big(torch.randn(700, 96))
    finally:
        set_cpu_gemm(previous)
    assert calls == []
    big(torch.randn(700, 96))
    assert calls == [1]


def test_compile_sees_a_plain_linear() -> None:
    fast, ref = _pair(96, 200)
    x = torch.randn(700, 96)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(fast, backend=backend, fullgraph=True)(x)
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any("linear" in t for t in targets) and not any("mkldnn" in t or "OneDNN" in t for t in targets), targets
    assert torch.allclose(out, ref(x), rtol=1e-5, atol=1e-4)


def test_backend_names_checked() -> None:
    with pytest.raises(ConfigError, match="AVFUSION_CPU_GEMM"):
        set_cpu_gemm("mkl")
    code = "import avfusion.layers.linear as m; print(m.cpu_gemm())"
    env_run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "AVFUSION_CPU_GEMM": "aten"},
                             capture_output=True, text=True)
    assert env_run.stdout.strip() == "aten", env_run.stderr


def test_a_bad_environment_value_is_refused_at_first_use() -> None:
    code = "import torch; from avfusion.layers import Linear; Linear(256, 256)(torch.randn(128, 256))"
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "AVFUSION_CPU_GEMM": "mkl"},
                         capture_output=True, text=True)
    assert run.returncode != 0 and "AVFUSION_CPU_GEMM" in run.stderr  # raised at first use, not at import
    imported = subprocess.run([sys.executable, "-c", "import avfusion"], env={**os.environ, "AVFUSION_CPU_GEMM": "mkl"},
                              capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr


def test_state_dict_is_nn_linears() -> None:
    fast, ref = _pair(16, 32)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    assert isinstance(fast, nn.Linear) and F.linear(torch.ones(1, 16), fast.weight, fast.bias).shape == (1, 32)
