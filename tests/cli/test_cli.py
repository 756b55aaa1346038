import json

import pytest

import avfusion

from avfusion.cli import COMMANDS, main
from avfusion.models import list_models


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(capsys, flag):
    from importlib.metadata import version

    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"avfusion {version('avfusion')} (torch ")
    assert avfusion.__version__ == version("avfusion")


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_models_json(capsys):
    assert main(["models", "mbt_*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["model"]: r for r in rows}
    assert by_name["mbt_base"]["scheme"] == "MBT bottleneck"
    assert by_name["mbt_base_late"]["scheme"] == "late fusion"
    assert by_name["mbt_base_early"]["scheme"] == "early fusion"
    assert all(n.startswith("mbt_") for n in by_name)


def test_flops_json_last_line(capsys):
    assert main(["flops", "mbt_base_xattn", "fusion_layer=0", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    d = json.loads(last)
    assert d["params"] > 170e6 and abs(d["gflops"] / 1075.5 - 1) < 0.03


def test_bad_input_is_one_clear_line(capsys):
    assert main(["flops", "mbt_tiny", "fusion_layr=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avfusion flops: error: unknown ModelConfig key(s) ['fusion_layr']")
    assert main(["flops", "mbt_huge"]) == 2
    assert "unknown model 'mbt_huge'" in capsys.readouterr().err


def test_demo_smoke_with_its_defaults(capsys):
    """`avfusion demo --smoke` exactly as a user types it: every tiny model (the unimodal baselines
    included, whose example inputs hold one modality) and the paper-size FLOP table."""
    assert main(["demo", "--smoke"]) == 0
    out = capsys.readouterr().out
    for name in list_models("*_tiny*"):
        assert name in out
    assert "mbt_tiny_audio" in out and "mbt_tiny_video" in out
    assert "mbt_base" in out and "GFLOPs" in out  # the FLOP table
    assert "NO" not in out.split("Paper-size")[0]  # every output finite
    assert "all models ran on their inputs" in out
