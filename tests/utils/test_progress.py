"""One progress rule (avfusion.utils.progress): a live bar on a terminal; on a log, a plain line
at most every LOG_EVERY seconds; nothing when disabled."""

from __future__ import annotations

import io
import sys

import pytest

from avfusion.utils import progress as P
from avfusion.utils.progress import progress_bar, progress_iter


class _Stderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(P.time, "monotonic", c)
    return c


def _stderr(monkeypatch: pytest.MonkeyPatch, tty: bool) -> _Stderr:
    err = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    return err


def test_a_terminal_gets_a_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _stderr(monkeypatch, tty=True)
    with progress_bar(4, "prepare", "clip") as bar:
        for _ in range(4):
            bar.update()
    text = err.getvalue()
    assert "\r" in text and "prepare" in text and "4/4" in text and "clip" in text


def test_a_log_gets_a_line_every_30_s_and_a_last_one(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    err = _stderr(monkeypatch, tty=False)
    bar = progress_bar(1000, "train", "step", initial=100)
    for _ in range(10):
        clock.now += 1.0
        bar.update()
        bar.set_postfix(loss="0.6931")
    assert err.getvalue() == ""  # not yet 30 s: nothing
    clock.now += P.LOG_EVERY
    bar.update()
    # 11 steps in 40 s
    assert err.getvalue() == "train: 111/1000 step (11%), 0.275 step/s, loss=0.6931\n"
    clock.now += 1.0
    bar.update()
    bar.close()
    bar.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("train: 112/1000 step (11%)")
    assert "\r" not in err.getvalue()


def test_short_work_on_a_log_and_disabled_work_write_nothing(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    err = _stderr(monkeypatch, tty=False)
    assert list(progress_iter(range(5), 5, "validate", "row")) == list(range(5))
    _stderr(monkeypatch, tty=True)
    with progress_bar(5, "x", enabled=False) as bar:
        bar.update(5)
    assert list(progress_iter(iter(range(3)), None, "validate", enabled=False)) == [0, 1, 2]
    assert err.getvalue() == "" and sys.stderr.getvalue() == ""


def test_an_unknown_total_counts_without_a_percentage(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    err = _stderr(monkeypatch, tty=False)
    with progress_bar(None, "predict", "row") as bar:
        clock.now += P.LOG_EVERY
        bar.update(3)
    assert err.getvalue().splitlines()[0] == "predict: 3 row, 0.1 row/s"
