"""A diverging run stops at the first non-finite loss or gradient norm (or skips up to
run.skip_nonfinite such steps), names the step, keeps its last good checkpoint, and never writes
NaN / inf weights; a model directory holding them is refused on load."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import avfusion
from avfusion.cli import main
from avfusion.errors import InputError, RunError
from avfusion.models.pretrained import save_pretrained
from avfusion.train.checkpoint import find_checkpoint

from helpers.avclips import make_dataset, write_labels
from helpers.fit_script import run


def _all_weights_finite(out: Path) -> int:
    """Checks every .safetensors file under ``out``; returns how many there are."""
    files = sorted(out.rglob("*.safetensors"))
    for f in files:
        for k, t in load_file(str(f)).items():
            assert torch.isfinite(t).all(), (f, k)
    return len(files)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_nan_loss_stops_the_run_naming_the_step_and_the_kept_checkpoint(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RunError) as e:
        run(str(out), 10, nan_steps={5})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("training diverged at step 5: loss nan")
    kept = out / "checkpoints" / "step-00000004"
    assert f"the last good checkpoint (step 4) is kept in {kept}" in msg
    assert "optim.lr" in msg and "run.skip_nonfinite" in msg
    assert find_checkpoint(out) == kept
    assert not (out / "model.safetensors").exists()
    assert _all_weights_finite(out) == 2  # the checkpoints of steps 2 and 4
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["loss"] is None and rows[-1]["skipped_nonfinite"] == 1  # strict JSON: null, not NaN


def test_skip_nonfinite_skips_up_to_n_steps_then_stops(tmp_path, capsys):
    out = tmp_path / "r"
    run(str(out), 10, stop_at=1, **{"run.save_every": "1", "run.skip_nonfinite": "2"})
    after_1 = load_file(str(out / "checkpoints" / "step-00000001" / "model.safetensors"))
    run(str(out), 10, stop_at=2, nan_steps={2}, first_step=1, **{"run.save_every": "1", "run.skip_nonfinite": "2"})
    after_2 = load_file(str(out / "checkpoints" / "step-00000002" / "model.safetensors"))
    assert all(torch.equal(after_1[k], after_2[k]) for k in after_1)  # the skipped step did not update
    assert "step 2: loss nan, gradient norm nan: not finite, step skipped (1 of run.skip_nonfinite=2)" \
        in capsys.readouterr().err
    with pytest.raises(RunError, match=r"diverged at step 7: .*\(3 such steps, more than run.skip_nonfinite=2\)"):
        run(str(out), 10, nan_steps={4, 7}, first_step=2, **{"run.save_every": "1", "run.skip_nonfinite": "2"})
    rows = {r["step"]: r for r in _rows(out)}
    assert sorted(rows) == list(range(1, 8))
    assert [rows[s].get("skipped_nonfinite", 0) for s in range(1, 8)] == [0, 1, 1, 2, 2, 2, 3]
    assert _all_weights_finite(out) > 0


def test_skip_count_survives_resume_and_skip_nonfinite_may_be_raised_on_resume(tmp_path):
    out = tmp_path / "r"
    run(str(out), 10, stop_at=4, nan_steps={2}, **{"run.skip_nonfinite": "1"})
    with pytest.raises(RunError, match="diverged at step 6"):  # the second bad step overall
        run(str(out), 10, nan_steps={6}, first_step=4, **{"run.skip_nonfinite": "1"})
    # The message's advice: the same --out resumes with a higher run.skip_nonfinite.
    result = run(str(out), 10, nan_steps={6}, first_step=4, **{"run.skip_nonfinite": "2"})
    assert result.resumed_from == 4 and result.steps == 10
    assert _rows(out)[-1]["skipped_nonfinite"] == 2
    assert _all_weights_finite(out) >= 3


def test_load_pretrained_refuses_nonfinite_weights(tmp_path):
    model = avfusion.create_model("mbt_tiny", num_classes=4)
    with torch.no_grad():
        for name, p in list(model.named_parameters())[:3]:
            p[..., 0] = float("inf")
    save_pretrained(model, tmp_path / "m")
    with pytest.raises(InputError) as e:
        avfusion.load_pretrained(tmp_path / "m")
    n = len(load_file(str(tmp_path / "m" / "model.safetensors")))
    assert str(e.value).startswith(f"'{tmp_path / 'm' / 'model.safetensors'}': 3 of {n} weight tensors hold NaN or inf")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {"train": make_dataset(root / "train", 2, seed=0), "labels": write_labels(root / "labels.csv")}


def test_cli_diverging_run_is_one_line_exit_2_and_keeps_its_checkpoint(tmp_path, clips, capsys):
    out = tmp_path / "r"
    rc = main(["train", "--model", "mbt_tiny", "--train", str(clips["train"]), "--labels", str(clips["labels"]),
               "--out", str(out), "--max-steps", "10", "--batch-size", "2", "--workers", "0", "--save-every", "1",
               "optim.lr=1e6", "run.progress=false", "run.tensorboard=false"])
    err = capsys.readouterr().err
    assert rc == 2
    line = err.strip().splitlines()
    assert len(line) == 1 and "Traceback" not in err
    assert line[0].startswith("avfusion train: error: training diverged at step ")
    step = int(line[0].split("diverged at step ")[1].split(":")[0])
    kept = find_checkpoint(out)
    assert kept is not None and kept.name == f"step-{step - 1:08d}" and f"kept in {kept}" in line[0]
    assert _all_weights_finite(out) >= 1 and not (out / "model.safetensors").exists()
    avfusion.load_pretrained(kept)  # the kept checkpoint is a usable model directory
