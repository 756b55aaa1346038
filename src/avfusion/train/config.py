"""Training configuration: typed dataclasses, loaded from YAML with dotted overrides.

``avfusion train CONFIG.yaml optim.lr=0.1 run.max_steps=100``; the resolved config is written
to ``OUT/config.yaml`` with every run (and checked on resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avfusion.data.clips import AugmentConfig

TASKS = ("multilabel", "single", "multihead")


@dataclass
class DataConfig:
    train: str | None = None  # manifest (CSV / JSONL) or a directory of prepared shards
    val: str | None = None
    labels: str | None = None  # label map, AudioSet's class_labels_indices.csv layout
    task: str = "auto"  # multilabel | single | multihead | auto (from the label map / manifest)
    batch_size: int = 8
    eval_batch_size: int = 8
    num_workers: int = 2
    pin_memory: bool = True
    prefetch_factor: int = 2
    eval_clips: int = 4  # K uniformly spaced clips per video at evaluation (MBT: 4)
    eval_crops: int = 3  # spatial crops per clip (the papers' 3-crop protocol)
    balanced_sampler: bool = False  # AudioSet-style per-label weights
    shuffle_buffer: int = 1000  # streaming shards
    mixup_alpha: float = 0.0  # Beta(alpha, alpha); one lambda for both modalities, labels mixed
    # Per-sample augmentation: random resized crop (scale jitter), flip, colour jitter,
    # SpecAugment, frequency jitter (avfusion.data.clips.AugmentConfig).
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.5  # MBT AudioSet: SGD 0.5 at batch 64
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    clip_grad_norm: float | None = 1.0
    fused: bool | None = None  # fused optimizer kernels; None = when available (CUDA)


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # used when warmup_steps == 0
    max_steps: int | None = None  # overrides epochs when set
    epochs: float = 50.0
    min_lr: float = 0.0


@dataclass
class LossConfig:
    task: str = "auto"  # takes DataConfig.task when auto
    label_smoothing: float = 0.0
    # How per-output losses combine: "mean" (MBT: mean over modality heads), "sum" (Zorro:
    # sum over its four outputs), or "auto" (the model family's paper rule).
    aggregation: str = "auto"
    # Optional per-output weights, e.g. {"fusion": 1.0, "audio": 0.5}; missing outputs weigh 1.
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class ContrastiveConfig:
    """Zorro's self-supervised objective: InfoNCE between projected outputs."""

    temperature: float = 0.08
    proj_dim: int = 512
    proj_hidden: int = 2048  # 0 = a single linear projection
    # Pairs contrasted (each symmetric): each unimodal output against the fusion output, and
    # audio against video (the Zorro paper's default).
    pairs: list[list[str]] = field(default_factory=lambda: [["audio", "fusion"], ["video", "fusion"], ["audio", "video"]])


@dataclass
class RunConfig:
    out: str = "runs/train"
    seed: int = 0
    max_steps: int | None = None  # shortcut for schedule.max_steps
    save_every: int = 500
    eval_every: int = 0  # 0 = at the end only
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile, with a fallback to eager if it fails
    grad_accum: int = 1
    grad_checkpointing: bool = False
    # DDP: set when some parameters get no gradient in a step (e.g. batches where a modality is
    # absent from every clip leave that stream unused).
    find_unused_parameters: bool = False
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed


@dataclass
class TrainConfig:
    model: str = "mbt_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    pretrained_backbone: str | None = None  # ImageNet ViT weights to start from
    init_from: str | None = None  # an avfusion model directory (fine-tuning, probing)
    linear_probe: bool = False  # freeze everything but the classifier heads
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.optim.name not in ("sgd", "adamw"):
            raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {self.optim.name!r}")
        if self.schedule.name not in ("cosine", "constant"):
            raise ValueError(f"schedule.name must be 'cosine' or 'constant', got {self.schedule.name!r}")
        if self.loss.aggregation not in ("auto", "mean", "sum"):
            raise ValueError(f"loss.aggregation must be auto, mean or sum, got {self.loss.aggregation!r}")
        for t in (self.data.task, self.loss.task):
            if t not in (*TASKS, "auto"):
                raise ValueError(f"task must be one of {TASKS} or 'auto', got {t!r}")
        if self.run.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"run.precision must be auto, fp32 or bf16, got {self.run.precision!r}")
        if self.run.grad_accum < 1:
            raise ValueError("run.grad_accum must be >= 1")
