"""avfusion.layers.Linear: nn.Linear with its float32 CPU products on the backend measured fastest
(avfusion.layers.gemm_tune: the trial, the per-host cache, the forced settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avfusion.errors import ConfigError
from avfusion.layers import gemm_tune
from avfusion.layers import linear as linear_mod
from avfusion.layers.gemm_tune import TUNER, m_bucket, product_key, read_cache
from avfusion.layers.linear import CPU_GEMMS, Linear, cpu_gemm, gemm_choices, set_cpu_gemm

pytestmark = pytest.mark.skipif(not linear_mod._ONEDNN, reason="this torch has no oneDNN linear")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test: its own cache folder, no choice in memory, the setting restored afterwards."""
    monkeypatch.setenv("AVFUSION_HOME", str(tmp_path / "home"))
    TUNER.reset()
    previous = set_cpu_gemm("auto")
    yield tmp_path / "home"
    set_cpu_gemm(previous)
    TUNER.reset()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record (direction, backend) of every product computed through the backends' table."""
    calls: list[tuple[str, str]] = []
    for direction in ("fwd", "dgrad", "wgrad"):
        real = getattr(linear_mod, f"_{direction}")

        def table(*args, _real=real, _d=direction):
            return {b: (lambda _b=b, _f=f: (calls.append((_d, _b)), _f())[1]) for b, f in _real(*args).items()}

        monkeypatch.setattr(linear_mod, f"_{direction}", table)
    return calls


def _fake_trial(monkeypatch: pytest.MonkeyPatch, winner: str) -> list[int]:
    """Make every trial find ``winner`` twice as fast (still computing each backend's result)."""
    trials: list[int] = []

    def trial(runs):
        trials.append(1)
        return {b: (1.0 if b == winner else 2.0) for b in runs}, {b: f() for b, f in runs.items()}

    monkeypatch.setattr(gemm_tune, "trial", trial)
    return trials


def _pair(k: int, n: int, bias: bool = True) -> tuple[Linear, nn.Linear]:
    torch.manual_seed(0)
    fast = Linear(k, n, bias=bias)
    ref = nn.Linear(k, n, bias=bias)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    layer.zero_grad(set_to_none=True)
    xr = x.clone().requires_grad_()
    y = layer(xr)
    y.backward(g)
    return y.detach(), xr.grad, layer.weight.grad, (layer.bias.grad if layer.bias is not None else None)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= rel * b.abs().max())


@pytest.mark.parametrize("backend", ["aten", "onednn", "auto"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(2, 30), (70,)])
@pytest.mark.parametrize("k,n", [(24, 40), (40, 24), (8, 8)])
def test_every_backend_matches_nn_linear(monkeypatch: pytest.MonkeyPatch, backend: str, lead: tuple[int, ...],
                                         k: int, n: int, bias: bool) -> None:
    set_cpu_gemm(backend)
    calls = _spy(monkeypatch)
    fast, ref = _pair(k, n, bias)
    x, g = torch.randn(*lead, k), torch.randn(*lead, n)
    got, want = _fwd_bwd(fast, x, g), _fwd_bwd(ref, x, g)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            assert _close(a, b)
    if backend == "aten":  # forced aten: nn.Linear itself, bit for bit
        assert calls == [] and all(a is None or torch.equal(a, b) for a, b in zip(got, want))
    elif backend == "onednn":  # forced oneDNN: every product there, whatever the size
        assert sorted(calls) == [("dgrad", "onednn"), ("fwd", "onednn"), ("wgrad", "onednn")]
    else:  # measured: each product timed on both backends once, then run on its choice
        assert {d for d, _ in calls} == {"fwd", "dgrad", "wgrad"} and {b for _, b in calls} == {"aten", "onednn"}


@pytest.mark.parametrize("winner", ["aten", "onednn"])
def test_aten_products_are_nn_linears_bit_for_bit(monkeypatch: pytest.MonkeyPatch, winner: str) -> None:
    """The first call (trial, through the autograd function) equals every later one (plain F.linear
    where aten was chosen), so a run does not depend on when the choices were made."""
    trials = _fake_trial(monkeypatch, winner)
    fast, ref = _pair(48, 96)
    x, g = torch.randn(3, 50, 48), torch.randn(3, 50, 96)
    first = _fwd_bwd(fast, x, g)
    assert len(trials) == 3
    later = _fwd_bwd(fast, x, g)
    assert len(trials) == 3  # decided once
    assert all(torch.equal(a, b) for a, b in zip(first, later))
    if winner == "aten":
        assert all(torch.equal(a, b) for a, b in zip(first, _fwd_bwd(ref, x, g)))


def test_auto_chooses_measures_once_and_persists(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    trials = _fake_trial(monkeypatch, "onednn")
    calls = _spy(monkeypatch)
    fast, ref = _pair(32, 64)
    x, g = torch.randn(100, 32), torch.randn(100, 64)
    _fwd_bwd(fast, x, g)
    keys = {product_key("fwd", 100, 32, 64, bias=True), product_key("dgrad", 100, 32, 64),
            product_key("wgrad", 100, 32, 64)}
    assert len(trials) == 3 and set(gemm_choices()) == keys and set(gemm_choices().values()) == {"onednn"}
    calls.clear()
    got = _fwd_bwd(fast, x, g)
    assert len(trials) == 3 and sorted(calls) == [("dgrad", "onednn"), ("fwd", "onednn"), ("wgrad", "onednn")]
    assert all(_close(a, b) for a, b in zip(got, _fwd_bwd(ref, x, g)))
    with torch.no_grad():  # inference: the same forward choice, no autograd function
        fast(torch.randn(101, 32))  # 101 tokens: the same bucket as 100
    assert len(trials) == 3
    saved = read_cache(TUNER.path)
    assert TUNER.path.parent == home / "gemm" and {k: v["backend"] for k, v in saved.items()} == gemm_choices()
    data = json.loads(TUNER.path.read_text())
    assert data["host"]["torch"] == torch.__version__ and data["host"]["cpu"]


def test_a_real_trial_chooses_a_backend(home: Path) -> None:
    fast, ref = _pair(16, 16)
    x = torch.randn(40, 16)
    assert _close(fast(x), ref(x))
    (key, choice), = gemm_choices().items()
    assert key == product_key("fwd", 40, 16, 16, bias=True) and choice in gemm_tune.BACKENDS
    entry = read_cache(TUNER.path)[key]
    assert entry["backend"] == choice and set(entry["us"]) == set(gemm_tune.BACKENDS)


def test_a_trial_draws_no_random_numbers() -> None:
    """A run's random stream (dropout, mixup) must not depend on whether its choices were measured."""
    fast, _ = _pair(16, 24)
    x = torch.randn(30, 16, requires_grad=True)
    state = torch.get_rng_state()
    fast(x).sum().backward()
    assert len(TUNER.measured) == 3 and torch.equal(torch.get_rng_state(), state)


_CHILD = """
import json, sys, torch
from avfusion.layers import Linear, gemm_choices
from avfusion.layers.gemm_tune import TUNER
torch.set_num_threads({threads})
torch.manual_seed(0)
layer = Linear(32, 64)
layer(torch.randn(100, 32, requires_grad=True)).sum().backward()
print(json.dumps({{"choices": gemm_choices(), "measured": TUNER.measured}}))
"""


def _child(home: Path, **env: str) -> dict:
    code = _CHILD.format(threads=torch.get_num_threads())
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "AVFUSION_HOME": str(home), **env})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_the_cache_is_read_back_in_a_fresh_process(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    _fake_trial(monkeypatch, "onednn")  # a choice no real trial here would be sure to make
    fast, _ = _pair(32, 64)
    fast(torch.randn(100, 32, requires_grad=True)).sum().backward()
    mine = gemm_choices()
    child = _child(home)
    assert child["measured"] == [] and child["choices"] == mine and set(mine.values()) == {"onednn"}


def test_a_corrupt_cache_is_measured_again() -> None:
    path = TUNER.path
    path.parent.mkdir(parents=True)
    path.write_text('{"choices": {"fwd+b m128 k32 n64 f32 t1": {"backend": "mk')  # a torn write
    fast, _ = _pair(32, 64)
    fast(torch.randn(100, 32, requires_grad=True)).sum().backward()
    assert len(TUNER.measured) == 3 and set(read_cache(path)) == set(TUNER.measured) == set(gemm_choices())
    path.write_text(json.dumps({"choices": {k: {"backend": "mkl"} for k in TUNER.measured}}))  # unknown backend
    assert read_cache(path) == {}
    TUNER.reset()
    fast(torch.randn(100, 32, requires_grad=True)).sum().backward()
    assert len(TUNER.measured) == 3 and set(read_cache(path)) == set(TUNER.measured)


def test_a_choice_another_process_wrote_first_is_adopted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = product_key("fwd", 100, 32, 64, bias=False)
    real_trial = gemm_tune.trial

    def racing_trial(runs):  # another process decides the same key while this one measures
        out = real_trial(runs)
        TUNER.path.parent.mkdir(parents=True, exist_ok=True)
        TUNER.path.write_text(json.dumps({"choices": {key: {"backend": "onednn"}}}))
        monkeypatch.setattr(gemm_tune, "pick", lambda times, fixed=0.0: "aten")
        return out

    monkeypatch.setattr(gemm_tune, "trial", racing_trial)
    fast, ref = _pair(32, 64, bias=False)
    x = torch.randn(100, 32)
    with torch.no_grad():
        assert _close(fast(x), ref(x))
    assert gemm_choices() == {key: "onednn"} and read_cache(TUNER.path)[key]["backend"] == "onednn"


def test_an_unwritable_cache_keeps_choices_in_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("AVFUSION_HOME", str(blocker))
    TUNER.reset()
    trials = _fake_trial(monkeypatch, "onednn")
    fast, _ = _pair(32, 64)
    with pytest.warns(UserWarning, match="AVFUSION_HOME"):
        with torch.no_grad():
            fast(torch.randn(100, 32))
            fast(torch.randn(100, 32))
    assert len(trials) == 1 and set(gemm_choices().values()) == {"onednn"}


def test_keys_bucket_tokens_and_name_threads() -> None:
    assert m_bucket(785) == m_bucket(789) == 861 and m_bucket(401) == m_bucket(405) == 431
    assert m_bucket(1024) == 1024 and m_bucket(1025) > 1024 and m_bucket(3) == 3
    assert product_key("fwd", 785, 768, 2304, bias=True, threads=2) == "fwd+b m861 k768 n2304 f32 t2"
    assert product_key("wgrad", 785, 768, 2304, bias=True, threads=1) == "wgrad m861 k768 n2304 f32 t1"
    assert gemm_tune.pick({"aten": 1.0, "onednn": 0.99}) == "aten"  # within the margin: nn.Linear's
    assert gemm_tune.pick({"aten": 1.0, "onednn": 0.5}) == "onednn"
    assert gemm_tune.pick({"aten": 100e-6, "onednn": 60e-6}, fixed_cost_s=50e-6) == "aten"  # the path's cost counts


def test_non_contiguous_input_and_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    set_cpu_gemm("onednn")
    fast, ref = _pair(64, 256)
    base = torch.randn(2, 64, 60)
    xa = base.clone().requires_grad_()
    xb = base.clone().requires_grad_()
    ya = fast(xa.transpose(1, 2))  # (2, 60, 64), not contiguous
    yb = ref(xb.transpose(1, 2))
    g = torch.randn(2, 256, 60).transpose(1, 2)  # a non-contiguous incoming gradient
    ya.backward(g)
    yb.backward(g)
    assert _close(ya, yb) and _close(xa.grad, xb.grad) and _close(fast.weight.grad, ref.weight.grad)


@pytest.mark.parametrize("backend", ["onednn", "auto"])
def test_only_the_gradients_asked_for(backend: str) -> None:
    set_cpu_gemm(backend)
    fast, _ = _pair(96, 200)
    fast.weight.requires_grad_(False)
    fast.bias.requires_grad_(False)
    x = torch.randn(70, 96, requires_grad=True)
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is None and fast.bias.grad is None
    if backend == "auto":  # no weight-gradient product: nothing chosen for it
        assert sorted(k.split()[0] for k in gemm_choices()) == ["dgrad", "fwd+b"]
    fast.weight.requires_grad_(True)
    fast(torch.randn(70, 96)).sum().backward()  # an input without grad: only the weight's gradient
    assert fast.weight.grad is not None


def test_where_it_stays_nn_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    set_cpu_gemm("onednn")
    calls = _spy(monkeypatch)
    big = Linear(96, 200)
    big.double()(torch.randn(70, 96, dtype=torch.float64))  # float64
    big.float()
    big(torch.randn(96))  # a 1-D input
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = big(torch.randn(70, 96))
    assert y.dtype == torch.bfloat16  # autocast's rules, not ours
    previous = set_cpu_gemm("aten")
    try:
        assert cpu_gemm() == "aten"
        big(torch.randn(70, 96))
    finally:
        set_cpu_gemm(previous)
    assert calls == []
    big(torch.randn(70, 96))
    assert calls == [("fwd", "onednn")]
    assert gemm_choices() == {} and not TUNER.path.exists()  # forced: nothing measured or written


def test_compile_sees_a_plain_linear() -> None:
    fast, ref = _pair(96, 200)
    x = torch.randn(70, 96)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(fast, backend=backend, fullgraph=True)(x)
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any("linear" in t for t in targets) and not any("mkldnn" in t or "Tuned" in t for t in targets), targets
    assert torch.allclose(out, ref(x), rtol=1e-5, atol=1e-4)
    assert gemm_choices() == {}


def test_the_environment_chooses_at_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CPU_GEMMS == ("auto", "aten", "onednn")
    with pytest.raises(ConfigError, match="AVFUSION_CPU_GEMM"):
        set_cpu_gemm("mkl")
    for name in ("aten", "onednn", None):
        if name is None:
            monkeypatch.delenv("AVFUSION_CPU_GEMM", raising=False)
        else:
            monkeypatch.setenv("AVFUSION_CPU_GEMM", name)
        monkeypatch.setattr(linear_mod, "_CPU_GEMM", None)  # as in a fresh process
        assert cpu_gemm() == (name or "auto")
    monkeypatch.setenv("AVFUSION_CPU_GEMM", "onednn")
    monkeypatch.setattr(linear_mod, "_CPU_GEMM", None)
    calls = _spy(monkeypatch)
    Linear(8, 8)(torch.randn(3, 8, requires_grad=True)).sum().backward()  # the demo's widths are covered too
    assert sorted(calls) == [("dgrad", "onednn"), ("fwd", "onednn"), ("wgrad", "onednn")]
    assert gemm_choices() == {} and not TUNER.path.exists()  # forced: nothing measured or written


def test_a_bad_environment_value_is_refused_at_first_use_not_at_import() -> None:
    code = ("import avfusion, torch; print('imported', flush=True); from avfusion.layers import Linear; "
            "Linear(256, 256)(torch.randn(128, 256))")
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "AVFUSION_CPU_GEMM": "mkl"},
                         capture_output=True, text=True)
    assert run.stdout.strip() == "imported" and run.returncode != 0
    assert "ConfigError" in run.stderr and "AVFUSION_CPU_GEMM" in run.stderr


def test_state_dict_is_nn_linears() -> None:
    fast, ref = _pair(16, 32)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    assert isinstance(fast, nn.Linear) and F.linear(torch.ones(1, 16), fast.weight, fast.bias).shape == (1, 32)
