"""Bad config values and files are refused when the config is loaded, in one line naming the key
(or the file, line and column), as a ConfigError; through the CLI: exit 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avfusion.cli import main
from avfusion.errors import ConfigError
from avfusion.train.config import TrainConfig
from avfusion.utils.dataclass_config import build

BAD = [
    ("run.save_every=0", "run.save_every"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.eval_batch_size=0", "data.eval_batch_size"),
    ("run.log_every=0", "run.log_every"),
    ("run.grad_accum=0", "run.grad_accum"),
    ("run.max_steps=-1", "run.max_steps"),
    ("run.max_steps=0", "run.max_steps"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.prefetch_factor=0", "data.prefetch_factor"),
    ("schedule.warmup_steps=-5", "schedule.warmup_steps"),
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs"),
    ("schedule.epochs=0", "schedule.epochs"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("optim.clip_grad_norm=-1", "optim.clip_grad_norm"),
    ("schedule.min_lr=1.0", "schedule.min_lr"),  # above optim.lr (0.5)
    ("loss.label_smoothing=1", "loss.label_smoothing"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing"),
    ("loss.weights={fusion: -1}", "loss.weights"),
    ("contrastive.temperature=0", "contrastive.temperature"),
    ("contrastive.proj_dim=0", "contrastive.proj_dim"),
    ("contrastive.pairs=[[audio, audio]]", "contrastive.pairs"),
    ("data.eval_crops=2", "data.eval_crops"),
    ("data.eval_clips=0", "data.eval_clips"),
    ("data.mixup_alpha=-1", "data.mixup_alpha"),
    ("data.augment.flip=2", "data.augment.flip"),
    ("data.augment.crop_scale=[0.8, 0.2]", "data.augment.crop_scale"),
    ("data.augment.time_mask=-1", "data.augment.time_mask"),
    ("run.skip_nonfinite=-1", "run.skip_nonfinite"),
    ("run.seed=-1", "run.seed"),
    ("run.device=gpu", "run.device"),
    ("run.precision=fp16", "run.precision"),
    ("model_overrides=5", "model_overrides"),
    ("run=5", "'run' must be a mapping"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")) as e:
        build(TrainConfig, {}, [override])
    assert "\n" not in str(e.value)


def test_epochs_are_only_checked_when_they_set_the_length():
    assert build(TrainConfig, {}, ["schedule.epochs=0", "run.max_steps=10"]).run.max_steps == 10


def test_several_bad_values_are_reported_together():
    with pytest.raises(ConfigError) as e:
        build(TrainConfig, {}, ["data.batch_size=0", "run.log_every=0"])
    assert "data.batch_size must be an integer >= 1, got 0" in str(e.value)
    assert "run.log_every must be an integer >= 1, got 0" in str(e.value)


def _one_line_error(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("content,expect", [
    ("run:\n  out: [a\n", "YAML syntax error at line"),
    ("run: 5\n", "config key 'run' must be a mapping (section), got 5"),
    (None, "does not exist"),
    ("run:\n  save_every: 0\n", "run.save_every must be an integer >= 1, got 0"),
])
def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, content, expect):
    cfg = tmp_path / "cfg.yaml"
    if content is not None:
        cfg.write_text(content)
    assert main(["train", str(cfg)]) == 2
    assert expect in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("override", ["data.batch_size=0", "run.log_every=0", "run.max_steps=-1", "optim.lr=[1"])
def test_cli_overrides(tmp_path, capsys, override):
    assert main(["train", "--train", "x.csv", "--labels", "l.csv", "--out", str(tmp_path / "o"), override]) == 2
    assert override.split("=")[0] in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_yaml_error_in_a_real_process(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("optim: {lr: 0.1\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    p = subprocess.run([sys.executable, "-m", "avfusion", "train", str(cfg)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2
    assert "YAML syntax error at line 2, column 1" in _one_line_error(p.stderr)


@pytest.mark.parametrize("override,instead", [("loss.task=single", "data.task"),
                                              ("schedule.max_steps=10", "run.max_steps"),
                                              ("run.eval_every=100", "data.val is evaluated at the end")])
def test_removed_keys_name_their_replacement(override, instead):
    with pytest.raises(ConfigError, match=f"config key '{override.split('=')[0]}' was removed: use .*{instead}"):
        build(TrainConfig, {}, [override])
    section, name = override.split("=")[0].split(".")
    with pytest.raises(ConfigError, match="was removed"):
        build(TrainConfig, {section: {name: 1}})
