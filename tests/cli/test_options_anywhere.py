"""Options may stand anywhere among the positionals, for every subcommand (one parser helper)."""

from __future__ import annotations

import json

import pytest

from avfusion.cli import main


def test_flops_and_models(capsys):
    assert main(["flops", "mbt_tiny", "--json", "fusion_layer=1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "mbt_tiny"
    assert main(["models", "--json", "mbt_tiny*"]) == 0
    assert all(r["model"].startswith("mbt_tiny") for r in json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("cmd", ["train", "pretrain"])
def test_train_options_between_and_after_positionals(cmd, tmp_path, capsys):
    # parsing succeeds (no "unrecognized arguments"); the missing config file is the error
    rc = main([cmd, str(tmp_path / "c.yaml"), "--max-steps", "10", "run.seed=1", "--seed", "2", "optim.lr=0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and "unrecognized" not in err and "c.yaml' does not exist" in err


def test_validate_and_prepare(tmp_path, capsys):
    from helpers.avclips import make_dataset, write_labels

    manifest, labels = make_dataset(tmp_path / "clips", 1), write_labels(tmp_path / "labels.csv")
    assert main(["validate", "--labels", str(labels), str(manifest), "--json", "--no-decode", "--num-frames", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 4
    assert main(["prepare", "--labels", str(labels), str(manifest), "--out", str(tmp_path / "s"), "--model",
                 "mbt_tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 4


def test_bench_parses_models_and_overrides_around_flags(capsys):
    rc = main(["bench", "no_such_model", "--repeats", "1", "depth=2", "--warmup", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "unrecognized" not in err and "unknown model 'no_such_model'" in err


def test_predict_files_around_options(tmp_path, capsys):
    rc = main(["predict", str(tmp_path / "a.mp4"), "--model", str(tmp_path / "nomodel"), str(tmp_path / "b.mp4"),
               "--top-k", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "unrecognized" not in err and "no model directory" in err


def test_convert_checkpoint_after_options(tmp_path, capsys):
    ckpt = tmp_path / "missing.msgpack"
    rc = main(["convert", "scenic-mbt", "--out", str(tmp_path / "m"), "--fusion-layer", "1", str(ckpt),
               "--num-frames", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "unrecognized" not in err and "missing.msgpack" in err


@pytest.mark.parametrize("cmd", [["eval", "--data"], ["embed", "--data"], ["export", "--out"]])
def test_commands_without_positionals_refuse_a_stray_one(cmd, tmp_path, capsys):
    # eval, embed, export and demo take no positionals: a stray word is named, not silently taken
    with pytest.raises(SystemExit) as e:
        main([*cmd, str(tmp_path / "x"), "stray", "--model", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unrecognized arguments: stray" in err
