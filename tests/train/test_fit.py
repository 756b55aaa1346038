import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import avfusion
from avfusion.train.checkpoint import find_checkpoint

from helpers.fit_script import run
from helpers.synthetic import SyntheticAV, collate
from helpers.runs import assert_same_weights, final_weights

HERE = Path(__file__).parent
FIT_SCRIPT = HERE.parent / "helpers" / "fit_script.py"



def test_tiny_model_learns_a_separable_task(tmp_path):
    result = run(str(tmp_path / "run"), 60, **{"data.batch_size": "8", "optim.lr": "0.003", "run.save_every": "1000"})
    assert result.steps == 60
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    model = avfusion.load_pretrained(tmp_path / "run")
    ds = SyntheticAV()
    batch = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        pred = model({"audio": batch["audio"], "video": batch["video"]}).logits.argmax(1)
    assert (pred == batch["label"]).float().mean() > 0.9
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 60


def test_resume_in_process_is_exact(tmp_path):
    """With mixup, gradient accumulation, dropout and stochastic depth all drawing random numbers."""
    kw = {"mixup_alpha": 0.4, "run.grad_accum": "2"}
    full = run(str(tmp_path / "full"), 6, **kw)
    part = run(str(tmp_path / "part"), 6, stop_at=4, **kw)  # stops at step 4 with a checkpoint
    assert part.steps == 4 and not (tmp_path / "part" / "model.safetensors").exists()
    resumed = run(str(tmp_path / "part"), 6, **kw)
    assert resumed.resumed_from == 4 and full.steps == resumed.steps == 6
    assert_same_weights(final_weights(tmp_path / "full"), final_weights(tmp_path / "part"))


@pytest.mark.slow  # slow tier: a real SIGKILL and resume (in-process resume stays in the default tier)
def test_sigkill_and_resume_gives_identicalfinal_weights(tmp_path):
    full = tmp_path / "full"
    run(str(full), 10)
    killed = tmp_path / "killed"
    env = {**os.environ, "AVF_TEST_SLOW": "0.05"}  # ~0.2 s per step, so the kill lands mid-run
    proc = subprocess.Popen([sys.executable, str(FIT_SCRIPT), str(killed), "10"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and _checkpoint_step(killed) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()  # it really died before finishing
    step_at_kill = torch.load(find_checkpoint(killed) / "state.pt", weights_only=True)["step"]
    assert 4 <= step_at_kill < 10
    resumed = run(str(killed), 10)
    assert resumed.resumed_from == step_at_kill
    assert_same_weights(final_weights(full), final_weights(killed))
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))  # the steps logged after the checkpoint are not repeated


def _checkpoint_step(out) -> int:
    try:  # the writer may prune a folder while we look
        return torch.load(find_checkpoint(out) / "state.pt", weights_only=True)["step"]
    except (TypeError, FileNotFoundError):
        return 0


def test_resume_with_another_config_is_refused(tmp_path):
    run(str(tmp_path / "r"), 4, stop_at=2)
    import pytest

    with pytest.raises(ValueError, match="optim.lr: 0.001 -> 0.01"):
        run(str(tmp_path / "r"), 4, **{"optim.lr": "0.01"})


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch, capsys):
    def broken_compile(module, *a, **k):
        def call(*args, **kwargs):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = run(str(tmp_path / "c"), 2, **{"run.compile": "true"})
    assert result.steps == 2
    assert "torch.compile failed (RuntimeError: no compiler here); training eagerly" in capsys.readouterr().err
