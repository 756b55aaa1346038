"""Run a small training job (in-process from tests, or as a subprocess that a test kills).

python tests/helpers/fit_script.py OUT MAX_STEPS [key=value ...]

Run as a script, Python puts tests/helpers/ (not tests/) first on sys.path, so the script adds
tests/ itself to import the ``helpers`` package; imported (``from helpers.fit_script import run``)
it changes nothing.
"""

import math
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make `helpers` importable (tests/ is this file's parent's parent)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import avfusion  # noqa: E402
from avfusion.data.mixup import mixup  # noqa: E402
from avfusion.train.config import TrainConfig  # noqa: E402
from avfusion.train.loop import fit  # noqa: E402
from avfusion.train.task import Task  # noqa: E402
from avfusion.utils.dataclass_config import build  # noqa: E402
from helpers.synthetic import SyntheticAV, collate  # noqa: E402


class PoisonedTask(Task):
    """A Task whose loss is NaN at the given (1-based) steps: a stand-in for a diverging run.

    It counts its own forward calls (one per step: grad_accum=1); ``first_step`` is the step a
    resumed run starts from."""

    def __init__(self, *args, nan_steps=(), first_step: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_steps, self.calls = set(nan_steps), first_step

    def forward(self, batch: dict) -> dict:
        losses = super().forward(batch)
        self.calls += 1
        if self.calls in self.nan_steps:
            losses["loss"] = losses["loss"] * math.nan
        return losses


def make_config(out: str, max_steps: int, **extra: str) -> TrainConfig:
    overrides = [f"run.out={out}", f"run.max_steps={max_steps}", "run.save_every=2", "run.log_every=1",
                 "run.progress=false", "run.tensorboard=false", "data.batch_size=4", "data.num_workers=0",
                 "optim.name=adamw", "optim.lr=0.001", "schedule.warmup_steps=2", "model=mbt_tiny",
                 "model_overrides={num_classes: 4, drop_path_rate: 0.1, drop_rate: 0.1}",
                 *[f"{k}={v}" for k, v in extra.items()]]
    return build(TrainConfig, {}, overrides)


def run(out: str, max_steps: int, stop_at: int | None = None, mixup_alpha: float = 0.0, nan_steps=(),
        first_step: int = 0, on_log=None, **extra: str):
    cfg = make_config(out, max_steps, **extra)
    torch.manual_seed(cfg.run.seed)  # the initial weights depend on the seed only
    model = avfusion.create_model(cfg.model, **cfg.model_overrides)
    task = PoisonedTask(model, "supervised", "single", label_smoothing=0.1, nan_steps=nan_steps,
                        first_step=first_step)
    def with_mixup(batch, g):
        return mixup(batch, mixup_alpha, model.cfg.num_classes, generator=g)

    transform = with_mixup if mixup_alpha else None
    return fit(cfg, task, SyntheticAV(), collate, stop_at=stop_at, batch_transform=transform, on_log=on_log)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), **dict(a.split("=", 1) for a in sys.argv[3:]))
