"""Run a small training job (used as a subprocess by the SIGKILL test).

python fit_script.py OUT MAX_STEPS
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

import avfusion  # noqa: E402
from avfusion.data.mixup import mixup  # noqa: E402
from avfusion.train.config import TrainConfig  # noqa: E402
from avfusion.train.loop import fit  # noqa: E402
from avfusion.train.task import Task  # noqa: E402
from avfusion.utils.dataclass_config import build  # noqa: E402
from synthetic import SyntheticAV, collate  # noqa: E402


def make_config(out: str, max_steps: int, **extra: str) -> TrainConfig:
    overrides = [f"run.out={out}", f"run.max_steps={max_steps}", "run.save_every=2", "run.log_every=1",
                 "run.progress=false", "run.tensorboard=false", "data.batch_size=4", "data.num_workers=0",
                 "optim.name=adamw", "optim.lr=0.001", "schedule.warmup_steps=2", "model=mbt_tiny",
                 "model_overrides={num_classes: 4, drop_path_rate: 0.1, drop_rate: 0.1}",
                 *[f"{k}={v}" for k, v in extra.items()]]
    return build(TrainConfig, {}, overrides)


def run(out: str, max_steps: int, stop_at: int | None = None, mixup_alpha: float = 0.0, **extra: str):
    cfg = make_config(out, max_steps, **extra)
    torch.manual_seed(cfg.run.seed)  # the initial weights depend on the seed only
    model = avfusion.create_model(cfg.model, **cfg.model_overrides)
    task = Task(model, "supervised", "single", label_smoothing=0.1)
    transform = None
    if mixup_alpha:
        def transform(batch, g):
            return mixup(batch, mixup_alpha, model.cfg.num_classes, generator=g)
    return fit(cfg, task, SyntheticAV(), collate, stop_at=stop_at, batch_transform=transform)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
