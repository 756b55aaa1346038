"""Another process holding a folder's lock (avfusion.utils.lock), as a running command would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).parents[2] / "src")
_HOLD = ("import sys; from avfusion.utils.lock import hold_folder; lock = hold_folder(sys.argv[1]); "
         "print('held', flush=True); sys.stdin.read()")


def lock_holder(folder: Path, *argv: str) -> subprocess.Popen:
    """A process (command line ``-c FOLDER ARGV...``) holding ``folder``'s lock until its stdin is
    closed: ``proc.stdin.close(); proc.wait()``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc
