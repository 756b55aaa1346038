"""The model benchmark behind `avfusion bench` (bench/runner.py), called directly: the eager
fallback when torch.compile fails, and the ratio tables' pairing."""

import pytest

from avfusion.bench import BenchConfig, attn_ratios, bench_model, scheme_ratios


def test_bench_compile_falls_back_to_eager(monkeypatch, capsys):
    # A real torch.compile takes minutes on a 2-core CPU; what is tested here is the fallback:
    # when the compiled model fails, the run goes on eagerly and says so.
    import torch

    def broken_compile(model, *a, **k):
        def run(*args, **kwargs):
            raise RuntimeError("no compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    bc = BenchConfig(batch_size=1, modes=("fwd",), warmup=0, repeats=1, compile=True, memory=False, device="cpu")
    (r,) = bench_model("zorro_vit_tiny", bc, depth=1)
    assert r["compile"] == "failed (RuntimeError)" and r["ms_per_step"] > 0
    assert "measuring eagerly" in capsys.readouterr().err


def test_ratio_helpers_pair_only_matching_settings():
    base = dict(batch_size=1, precision="fp32", compile="off", grad_checkpointing=False, optimizer="none",
                mode="fwdbwd", tokens={"audio": 4, "video": 8})
    rows = [
        {**base, "model": "z", "attn_impl": "auto", "ms_per_step": 10.0, "gflops_run": 9.0,
         "family": "masked", "fusion": "zorro", "fusion_layer": 0},
        {**base, "model": "z", "attn_impl": "dense", "ms_per_step": 15.0, "gflops_run": 10.0,
         "family": "masked", "fusion": "zorro", "fusion_layer": 0},
        {**base, "model": "m", "attn_impl": "auto", "ms_per_step": 8.0, "gflops_run": 9.0,
         "family": "streams", "fusion": "bottleneck", "fusion_layer": 8},
        {**base, "model": "m", "attn_impl": "auto", "ms_per_step": 1.0, "gflops_run": 9.0,
         "family": "streams", "fusion": "bottleneck", "fusion_layer": 8, "batch_size": 4},
    ]
    (a,) = attn_ratios(rows)
    assert a["speedup"] == pytest.approx(1.5) and a["flop_ratio"] == pytest.approx(10 / 9)
    (s,) = scheme_ratios(rows)
    assert s["pair"] == "z / m" and s["time_ratio"] == pytest.approx(1.25)
