"""The one folder lock (avfusion.utils.lock) of train, prepare and corpus runs: a second holder
is refused in one line naming pid, host and command; released when the holder ends; a forked
child neither keeps nor releases its parent's lock."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import pytest

from avfusion.errors import RunError
from avfusion.utils.lock import LOCK_NAME, hold_folder

from helpers.lock_holder import lock_holder


def _free(folder: Path) -> bool:
    fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_second_holder_is_refused_naming_the_first_and_gets_it_once_released(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    proc = lock_holder(folder, "--some-flag")
    try:
        with pytest.raises(RunError) as e:
            hold_folder(folder)
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith(f"{folder} is in use by another run (pid {proc.pid} on {socket.gethostname()}, started ")
        assert msg.endswith(": -c " + str(folder) + " --some-flag); wait for it to end or use another --out")
    finally:
        proc.stdin.close()
        proc.wait()
    with hold_folder(folder):  # released with its holder
        assert not _free(folder)
    assert _free(folder)


def test_a_forked_child_neither_keeps_nor_releases_the_parents_lock(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    lock = hold_folder(folder)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:  # a DataLoader / prepare worker: lives on, and even "closes" the lock it inherited
        os.close(go_w)
        lock.close()
        os.write(done_w, b"1")
        os.read(go_r, 1)
        os._exit(0)
    os.close(go_r)
    try:
        os.read(done_r, 1)
        assert not _free(folder)  # the child's close did not release the parent's lock
        lock.close()
        assert _free(folder)  # and the child, still alive, does not keep it
    finally:
        os.close(go_w)
        os.waitpid(child, 0)
