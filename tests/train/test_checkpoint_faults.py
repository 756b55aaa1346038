"""The checkpoint protocol loses nothing, wherever the process dies, and survives damaged files.

Fault injection: ``AVFUSION_FAULT=checkpoint:<point>:3`` SIGKILLs the training process at
``<point>`` of its third save (step 6 of 8, save_every=2). Whatever the point, the run resumes
from the newest complete checkpoint (step 4 before the rename into place, step 6 after it; never
step 0) and ends with the same weights as an uninterrupted run.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avfusion.errors import RunError
from avfusion.train import checkpoint as C
from avfusion.train.checkpoint import CHECKPOINTS_DIR, FAULT_POINTS, find_checkpoint

from helpers.fit_script import run
from helpers.runs import assert_same_weights, final_weights

# Slow tier (make test-all): real SIGKILLs at every checkpoint-protocol point and damaged checkpoints.
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
FIT_SCRIPT = HERE.parent / "helpers" / "fit_script.py"
STEPS = 8  # checkpoints at 2, 4, 6, 8; the third save (step 6) is the one killed



def _ckpts(out: Path) -> list[str]:
    return sorted(p.name for p in (out / CHECKPOINTS_DIR).iterdir())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run here, in this process or a killed subprocess, computes with one thread: CPU results
    are bit-identical only at the same thread count, and seven one-thread processes share two
    cores without oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "full"
    run(str(out), STEPS)
    return final_weights(out)


def test_every_fault_point_resumes_from_the_newest_complete_checkpoint(tmp_path, reference, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    procs = {}
    for point in FAULT_POINTS:  # all at once: each is mostly interpreter start-up
        procs[point] = subprocess.Popen(
            [sys.executable, str(FIT_SCRIPT), str(tmp_path / point), str(STEPS)],
            env={**env, C.FAULT_ENV: f"checkpoint:{point}:3"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for point, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, err.decode()[-2000:])

    # Where each kill landed, as seen on disk.
    seen = {point: _ckpts(tmp_path / point) for point in FAULT_POINTS}
    assert seen["tmp-created"] == [".tmp-step-00000006", "step-00000002", "step-00000004"]
    assert seen["manifest-written"] == [".tmp-step-00000006", "step-00000002", "step-00000004"]
    assert seen["renamed"] == ["step-00000002", "step-00000004", "step-00000006"]
    assert seen["pruning"] == [".trash-step-00000002", "step-00000004", "step-00000006"]
    assert seen["done"] == ["step-00000004", "step-00000006"]
    before_rename = FAULT_POINTS[:FAULT_POINTS.index("renamed")]

    for point in FAULT_POINTS:
        out = tmp_path / point
        assert not (out / "model.safetensors").exists()  # it really died before the end
        resumed = run(str(out), STEPS)
        assert resumed.resumed_from == (4 if point in before_rename else 6), point
        assert_same_weights(reference, final_weights(out))
        assert _ckpts(out) == ["step-00000006", "step-00000008"], point  # stale folders cleaned, 2 kept
        steps = [int(x.split('"step": ')[1].split(",")[0]) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, STEPS + 1)), point


def test_fault_spec_with_an_unknown_point_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(C.FAULT_ENV, "checkpoint:renamd:1")
    with pytest.raises(ValueError, match="unknown point 'renamd'"):
        run(str(tmp_path / "r"), 2)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A run stopped at step 6 of 8: complete checkpoints at steps 4 and 6."""
    out = tmp_path_factory.mktemp("stopped") / "r"
    run(str(out), STEPS, stop_at=6)
    assert _ckpts(out) == ["step-00000004", "step-00000006"]
    return out


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble(f: Path) -> None:
    data = bytearray(f.read_bytes())
    i = len(data) * 3 // 4
    data[i: i + 8] = bytes(255 - b for b in data[i: i + 8])  # same size, different bytes
    f.write_bytes(bytes(data))


DAMAGE = {
    "truncated state.pt": ("state.pt", _truncate),
    "truncated model.safetensors": ("model.safetensors", _truncate),
    "garbled model.safetensors": ("model.safetensors", _garble),
    "garbled state.pt": ("state.pt", _garble),
    "missing config.json": ("config.json", Path.unlink),
    "missing manifest.json": ("manifest.json", Path.unlink),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, stopped, reference, capsys, damage):
    out = tmp_path / "r"
    shutil.copytree(stopped, out)
    name, spoil = DAMAGE[damage]
    spoil(out / CHECKPOINTS_DIR / "step-00000006" / name)
    capsys.readouterr()
    resumed = run(str(out), STEPS)
    err = capsys.readouterr().err
    assert resumed.resumed_from == 4
    line = next(x for x in err.splitlines() if x.startswith("damaged checkpoint"))
    assert f"step-00000006/{name}" in line and "falling back to step-00000004" in line
    assert_same_weights(reference, final_weights(out))
    assert _ckpts(out) == [".damaged-step-00000006", "step-00000006", "step-00000008"]


def test_all_checkpoints_damaged_is_one_error_naming_the_files(tmp_path, stopped):
    out = tmp_path / "r"
    shutil.copytree(stopped, out)
    _truncate(out / CHECKPOINTS_DIR / "step-00000006" / "model.safetensors")
    _garble(out / CHECKPOINTS_DIR / "step-00000004" / "state.pt")
    before = _ckpts(out)
    with pytest.raises(RunError) as e:
        run(str(out), STEPS)
    msg = str(e.value)
    assert "\n" not in msg
    assert "step-00000006/model.safetensors" in msg and "truncated" in msg
    assert "step-00000004/state.pt" in msg and "corrupted" in msg
    assert _ckpts(out) == before  # nothing was moved: the user decides


def test_resume_from_the_previous_single_folder_layout(tmp_path, stopped, reference):
    out = tmp_path / "r"
    shutil.copytree(stopped, out)
    root = out / CHECKPOINTS_DIR
    os.rename(root / "step-00000006", out / "checkpoint")
    (out / "checkpoint" / "manifest.json").unlink()
    shutil.rmtree(root)
    assert find_checkpoint(out) == out / "checkpoint"
    assert run(str(out), STEPS).resumed_from == 6
    assert_same_weights(reference, final_weights(out))
    assert not (out / "checkpoint").exists() and _ckpts(out) == ["step-00000008"]


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, reference):
    out = tmp_path / "r"
    real = C.write_synced
    calls = {"n": 0}

    def full_disk(path: Path, data: bytes) -> None:
        if "step-00000004" in str(path) and path.name == "state.pt":
            calls["n"] += 1
            path.write_bytes(data[:100])  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(C, "write_synced", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run(str(out), STEPS)
    assert calls["n"] == 1 and find_checkpoint(out).name == "step-00000002"
    monkeypatch.setattr(C, "write_synced", real)
    assert run(str(out), STEPS).resumed_from == 2
    assert_same_weights(reference, final_weights(out))


def test_checkpoints_and_the_final_model_refuse_nonfinitefinal_weights(tmp_path):
    import avfusion

    model = avfusion.create_model("mbt_tiny", num_classes=4)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    with pytest.raises(RunError, match=r"refusing to write the checkpoint of step 3: 1 weight tensor\(s\) hold NaN"):
        C.save_checkpoint(tmp_path, model, {}, {"step": 3})
    assert not (tmp_path / CHECKPOINTS_DIR).exists()  # refused before anything was written
    with pytest.raises(RunError, match="refusing to write the final model"):
        C.write_model_dir(model, tmp_path / "final")
    assert not (tmp_path / "final" / "model.safetensors").exists()
