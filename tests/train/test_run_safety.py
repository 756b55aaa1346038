"""The run folder: locked while in use, untouched by a refused resume, one metrics row per step,
and a clean stop with a checkpoint on SIGINT / SIGTERM."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from avfusion.cli import main
from avfusion.errors import ConfigError, RunError
from avfusion.train.checkpoint import find_checkpoint
from avfusion.train.signals import TrainingInterrupted
from avfusion.utils.lock import LOCK_NAME, lock_run_folder

from helpers.avclips import make_dataset, write_labels
from helpers.fit_script import run
from helpers.runs import assert_same_weights, final_weights

HERE = Path(__file__).parent
FIT_SCRIPT = HERE.parent / "helpers" / "fit_script.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}



def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the process ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


# --------------------------------------------------------------------------- lock

def test_second_run_is_refused_naming_the_holder_and_the_lock_dies_with_it(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, str(FIT_SCRIPT), str(out), "1000"],
                            env={**ENV, "AVF_TEST_SLOW": "0.05"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        def holder() -> bool:
            try:
                return json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
            except (OSError, ValueError):
                return False

        _wait_for(holder, proc, "lock holder line")
        with pytest.raises(RunError) as e:
            run(str(out), 4)
        assert f"{out} is in use by another run (pid {proc.pid} on " in str(e.value)
        assert "fit_script.py" in str(e.value)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert run(str(out), 2).steps == 2  # the kernel released the lock with the process


def test_lock_is_reentrant_in_one_thread_refused_in_another_and_not_held_by_forked_children(tmp_path):
    out = tmp_path / "r"
    errors = []
    with lock_run_folder(out):
        with lock_run_folder(out):  # run_training, then fit: one lock
            pass
        t = threading.Thread(target=lambda: errors.append(_try_lock(out)))
        t.start()
        t.join()
        read, write = os.pipe()
        ready_r, ready_w = os.pipe()
        child = os.fork()
        if child == 0:  # a DataLoader worker, say: lives on past the parent's release
            os.close(write)
            os.write(ready_w, b"1")  # the at-fork hook has run by now
            os.read(read, 1)
            os._exit(0)
        os.read(ready_r, 1)
    os.close(read)
    try:
        fd = os.open(out / LOCK_NAME, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free although the child is alive
        os.close(fd)
    finally:
        os.close(write)
        os.waitpid(child, 0)
    assert errors == ["in use by another run in this process"]


def _try_lock(out: Path) -> str:
    try:
        with lock_run_folder(out):
            return "acquired"
    except RunError as e:
        return str(e).split(" is ", 1)[1]


def test_unusable_out_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--train", "missing.csv", "--labels", "missing.csv", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(blocker) in err  # the folder, not the manifest: the lock comes first


# --------------------------------------------------------------------------- resume

def test_refused_resume_leaves_every_file_byte_identical(tmp_path):
    out = tmp_path / "r"
    run(str(out), 4, stop_at=2)
    before = _snapshot(out)
    assert {"train_config.json", "metrics.jsonl", ".lock", "checkpoints/step-00000002/manifest.json"} <= set(before)
    with pytest.raises(ConfigError, match="optim.lr: 0.001 -> 0.01"):
        run(str(out), 4, **{"optim.lr": "0.01"})
    assert _snapshot(out) == before


class Crash(Exception):
    """Stands for a process dying between two checkpoints (the fault tests kill real ones)."""


def _crash_at(step: int):
    def on_log(row: dict) -> None:
        if row["step"] == step:
            raise Crash
    return on_log


def test_metrics_hold_each_step_once_after_two_crashed_runs(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(Crash):
        run(str(out), 10, on_log=_crash_at(3))  # checkpoint 2, steps 1-3 logged
    with pytest.raises(Crash):
        run(str(out), 10, on_log=_crash_at(5))  # resumed at 2: checkpoint 4, steps 3-5 logged
    assert find_checkpoint(out).name == "step-00000004"
    assert _steps(out) == [1, 2, 3, 4, 5]
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"loss": 0.5, "step": 6, "ep')  # a line torn by a kill
    run(str(out), 10)
    assert _steps(out) == list(range(1, 11))


# --------------------------------------------------------------------------- signals

# These tests are about a run that receives SIGINT / SIGTERM. A run whose caller ignores them
# (nohup, a background job) leaves them ignored by design, so each test states its precondition
# rather than inheriting the test runner's (a suite started as a background job of a
# non-interactive shell inherits SIGINT ignored: the SIGINT cases then failed, the SIGTERM ones not).


def _signals_handled() -> None:
    """Default dispositions for SIGINT / SIGTERM, unblocked, in this process."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.fixture
def handled_signals():
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    _signals_handled()
    yield
    signal.signal(signal.SIGINT, saved[0])
    signal.signal(signal.SIGTERM, saved[1])
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _child_signals_default() -> None:
    """preexec_fn: a child starts with SIGINT / SIGTERM at their defaults (Python then installs its
    KeyboardInterrupt handler), whatever this process has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _signal_at(step: int, *signums: int):
    def on_log(row: dict) -> None:
        if row["step"] == step:
            for s in signums:
                os.kill(os.getpid(), s)
    return on_log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_saves_and_resumes_exactly(tmp_path, signum, handled_signals):
    full = tmp_path / "full"
    run(str(full), 6)
    out = tmp_path / "r"
    handler = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as e:
        # Sent while step 2 is logged: step 3 is done, then the run stops between two periodic saves.
        run(str(out), 6, on_log=_signal_at(2, signum))
    assert signal.getsignal(signum) is handler  # restored
    assert e.value.step == 3 and e.value.exit_status == 128 + signum
    assert str(e.value) == (f"interrupted at step 3; checkpoint saved to {out / 'checkpoints' / 'step-00000003'}; "
                            "run the same command to resume")
    assert find_checkpoint(out).name == "step-00000003" and not (out / "model.safetensors").exists()
    assert run(str(out), 6).resumed_from == 3
    assert_same_weights(final_weights(full), final_weights(out))


def test_signal_during_the_last_step_still_writes_the_final_model(tmp_path, handled_signals):
    out = tmp_path / "r"
    with pytest.raises(TrainingInterrupted) as e:
        run(str(out), 6, on_log=_signal_at(5, signal.SIGTERM))  # seen at the end of step 6, the last
    assert e.value.step == 6 and (out / "model.safetensors").is_file()  # but no evaluation would follow
    assert run(str(out), 6).resumed_from == 6


def test_second_signal_interrupts_at_once(tmp_path, handled_signals):
    with pytest.raises(KeyboardInterrupt) as e:
        run(str(tmp_path / "r"), 6, on_log=_signal_at(3, signal.SIGINT, signal.SIGINT))  # raises in on_log
    assert not isinstance(e.value, TrainingInterrupted)
    assert find_checkpoint(tmp_path / "r").name == "step-00000002"  # the last periodic one


def test_ctrl_c_through_the_cli_with_dataloader_workers(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: the workers ignore it, the run
    saves a checkpoint, prints one line and exits 130; the same command resumes exactly."""
    train = make_dataset(tmp_path / "clips", 2, seed=0)
    labels = write_labels(tmp_path / "labels.csv")

    def args(out: Path, workers: int) -> list[str]:
        return ["train", "--model", "mbt_tiny", "--train", str(train), "--labels", str(labels), "--out", str(out),
                "--max-steps", "30", "--batch-size", "2", "--workers", str(workers), "--save-every", "2",
                "run.progress=false", "run.tensorboard=false", "optim.name=adamw", "optim.lr=0.001"]

    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "avfusion", *args(out, 2)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_child_signals_default)
    try:
        _wait_for(lambda: find_checkpoint(out) is not None, proc, "first checkpoint")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    step = int(lines[0].split("interrupted at step ")[1].split(";")[0])
    assert 2 <= step < 30
    assert lines[0] == (f"avfusion train: interrupted at step {step}; checkpoint saved to "
                        f"{out / 'checkpoints' / f'step-{step:08d}'}; run the same command to resume")
    assert find_checkpoint(out).name == f"step-{step:08d}"

    assert main(args(out, 0)) == 0
    assert main(args(tmp_path / "full", 0)) == 0
    assert_same_weights(final_weights(tmp_path / "full"), final_weights(out))
    assert _steps(out) == list(range(10, 31, 10))


def test_a_run_started_when_ast_kept_mbts_numbers_resumes_with_them(tmp_path, capsys):
    """Before the preset alone decided the normalisation, `preprocess.audio_norm=ast` trained on
    (x - 1.102) / (2 x 2.762); resumed now, the run keeps those features (its checkpoint says so)."""
    import avfusion
    from avfusion.train.checkpoint import save_checkpoint
    from avfusion.train.run import normalised_as_trained

    plain_ast = avfusion.create_model("mbt_tiny", num_classes=2, **{"preprocess.audio_norm": "ast"}).cfg
    assert normalised_as_trained(tmp_path / "new", plain_ast) is plain_ast  # nothing to resume
    old = avfusion.create_model("mbt_tiny", num_classes=2, **{"preprocess.audio_norm": "ast",
                                                              "preprocess.audio_mean": 1.102,
                                                              "preprocess.audio_std": 2.762})
    save_checkpoint(tmp_path / "old", old, {}, {"step": 2})
    resumed = normalised_as_trained(tmp_path / "old", plain_ast)
    assert resumed.preprocess.audio_stats() == (1.102, 2 * 2.762) != plain_ast.preprocess.audio_stats()
    assert resumed.replace(preprocess=plain_ast.preprocess) == plain_ast  # nothing else moved
    assert "resuming with the audio normalisation this run was trained with: audio_norm 'ast'" in capsys.readouterr().err
    mbt = avfusion.create_model("mbt_tiny", num_classes=2)
    save_checkpoint(tmp_path / "mbt", mbt, {}, {"step": 2})
    assert normalised_as_trained(tmp_path / "mbt", mbt.cfg) is mbt.cfg
