"""An interrupted demo: every running training job ends with one line, no traceback, exit 143.

`avfusion demo` trains its models in separate processes, two at a time. SIGTERM (or Ctrl-C) to
the demo is forwarded once to each running job: the trainer finishes its step, saves a checkpoint
and the job says so in one line; no further job starts; the demo ends with one line and 128 + the
signal.
"""

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.slow  # slow tier (make test-all): a real demo run, its data and two training jobs, then SIGTERM
def test_sigterm_ends_each_running_job_with_one_line(tmp_path):
    out = tmp_path / "demo"
    # 40 training clips (one batch of 32 per epoch); far more steps than run before the signal.
    cmd = [sys.executable, "-m", "avfusion", "demo", "--out", str(out), "--clips", "40", "4", "10",
           "--steps", "100000", "--no-bigbuckbunny"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # Both jobs are training once each has logged (run.log_every = 10 steps).
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "models").glob("*/metrics.jsonl"))) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 143, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and "Warning" not in line]
    jobs = [line for line in lines if "interrupted at step" in line]
    # The two jobs running at the signal (the first two models), one line each, with their checkpoints.
    assert sorted(line.split(":")[0] for line in jobs) == ["mbt_tiny", "zorro_vit_tiny"], stderr
    assert all("checkpoint saved to" in line for line in jobs), stderr
    assert lines[-1].startswith("avfusion demo: interrupted by SIGTERM while training: 0 of 5 models done"), stderr
    assert len(lines) == 3, stderr  # the two jobs' lines and the demo's
    assert not (out / "models" / "mbt_tiny_late").exists()  # no job started after the signal
    for name in ("mbt_tiny", "zorro_vit_tiny"):
        assert list((out / "models" / name / "checkpoints").glob("step-*"))
