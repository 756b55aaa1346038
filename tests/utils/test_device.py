"""One device rule (avfusion.utils.device) and one default, ``auto``, for every command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import avfusion.cli.embed
import avfusion.cli.eval
import avfusion.cli.predict
from avfusion.bench.runner import BenchConfig
from avfusion.cli import main
from avfusion.errors import ConfigError
from avfusion.train.config import TrainConfig
from avfusion.utils.device import resolve_device


def _gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_auto_is_this_ranks_gpu_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # as written
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


@pytest.mark.parametrize("spec, gpus, message", [
    ("gpu", 1, "run.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("cuda:x", 1, "run.device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ("meta", 1, "run.device must be auto, cpu, cuda or cuda:N, got 'meta'"),
    ("cuda", 0, "run.device 'cuda': this machine has no CUDA device (use cpu or auto)"),
    ("cuda:0", 0, "run.device 'cuda:0': this machine has no CUDA device (use cpu or auto)"),
    ("cuda:2", 2, "run.device 'cuda:2': this machine has 2 CUDA device(s), so no cuda:2"),
])
def test_an_invalid_or_unavailable_device_is_one_config_error(monkeypatch: pytest.MonkeyPatch, spec: str, gpus: int,
                                                               message: str) -> None:
    _gpus(monkeypatch, gpus)
    with pytest.raises(ConfigError) as e:
        resolve_device(spec, key="run.device")
    assert str(e.value) == message


def test_a_rank_beyond_the_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match="so no cuda:1 for local rank 1"):
        resolve_device("auto", local_rank=1)


class _Loaded(Exception):
    """Raised by the stand-in loader: the command got as far as choosing its device."""


def test_every_command_defaults_to_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """predict (files and --data), eval and embed, with no --device, load the model on this
    machine's GPU (here a pretend one); train and bench default to auto too."""
    _gpus(monkeypatch, 1)
    seen: list[torch.device] = []

    def load(model_dir: object, device: torch.device, args: object) -> None:
        seen.append(device)
        raise _Loaded

    for module in (avfusion.cli.predict, avfusion.cli.eval, avfusion.cli.embed):
        monkeypatch.setattr(module, "load_for_inference", load)
    (tmp_path / "model").mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,path,labels\na,a.mp4,x\n")
    model, data = str(tmp_path / "model"), str(manifest)
    for argv in (["predict", "x.mp4", "--model", model],
                 ["predict", "--data", data, "--out", str(tmp_path / "p.jsonl"), "--model", model],
                 ["eval", "--model", model, "--data", data],
                 ["embed", "--model", model, "--data", data, "--out", str(tmp_path / "e.npz")]):
        with pytest.raises(_Loaded):
            main(argv)
    assert seen == [torch.device("cuda", 0)] * 4
    assert TrainConfig().run.device == "auto" and BenchConfig().device == "auto"
