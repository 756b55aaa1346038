import json

import pytest

from avfusion.bench import BenchConfig
from avfusion.cli import main as cli_main
from avfusion.cli.bench import main as bench_main

QUICK = ["--batch-size", "1", "--warmup", "0", "--repeats", "1", "--device", "cpu"]


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_bench_cli_json_and_ratio_tables(capsys, tmp_path):
    out_file = tmp_path / "bench.json"
    rc = bench_main(["zorro_vit_tiny", "mbt_tiny", "mbt_tiny_early", "depth=2", "--attn-impl", "auto,dense",
                     "--json", "--out", str(out_file), *QUICK])
    assert rc == 0
    out = capsys.readouterr().out
    lines = _json_lines(out)
    results = [x for x in lines if x["kind"] == "result"]
    assert len(results) == 3 * 2 * 2  # models x impls x modes (default both)
    for r in results:
        assert r["ms_per_step"] > 0 and r["clips_per_s"] > 0 and r["gflops"] > 0
        assert r["mfu"] is None  # CPU: no peak to compare against
        assert r["config"]["overrides"] == {"depth": 2}
    zorro = {(r["attn_impl"], r["mode"]): r for r in results if r["model"] == "zorro_vit_tiny"}
    assert zorro["dense", "fwd"]["gflops_run"] > zorro["auto", "fwd"]["gflops_run"]  # masked blocks computed
    assert zorro["dense", "fwd"]["gflops"] == zorro["auto", "fwd"]["gflops"]  # useful work is the same
    attn = [x for x in lines if x["kind"] == "attn_ratio" and x["model"] == "zorro_vit_tiny"]
    assert {a["mode"] for a in attn} == {"fwd", "fwdbwd"} and all(a["flop_ratio"] > 1 for a in attn)
    pairs = {x["pair"] for x in lines if x["kind"] == "scheme_ratio"}
    assert pairs == {"mbt_tiny_early / mbt_tiny", "zorro_vit_tiny / mbt_tiny"}
    assert "masked attention" in out and "schemes at the same token counts" in out
    saved = json.loads(out_file.read_text())
    assert len(saved["results"]) == 12 and saved["attn_ratios"] and saved["scheme_ratios"]


def test_bench_registered_and_switches(capsys):
    rc = cli_main(["bench", "mbt_tiny", "--mode", "fwdbwd", "--precision", "bf16", "--grad-checkpointing",
                   "--optimizer", "adamw", "--fused", "off", "--json", *QUICK])
    assert rc == 0
    (r,) = [x for x in _json_lines(capsys.readouterr().out) if x["kind"] == "result"]
    assert r["mode"] == "fwdbwd" and r["precision"] == "bf16" and r["grad_checkpointing"] is True
    assert r["optimizer"] == "adamw"


def test_bench_errors(capsys):
    assert cli_main(["bench", "no_such_model", *QUICK]) == 2
    with pytest.raises(SystemExit):
        bench_main(["mbt_tiny", "--attn-impl", "flash", *QUICK])
    with pytest.raises(ValueError, match="modes"):
        BenchConfig(modes=("train",))
