"""Training configuration: typed dataclasses, loaded from YAML with dotted overrides.

``avfusion train CONFIG.yaml optim.lr=0.1 run.max_steps=100``; the resolved config is written
to ``OUT/train_config.json`` and stored in every checkpoint (a resume under another config is
refused). Every value is checked when the config is built (:func:`validate`): a bad one is a
:class:`~avfusion.errors.ConfigError` naming the key and the value, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from avfusion.data.clips import AugmentConfig
from avfusion.errors import ConfigError
from avfusion.tasks import TASK_KINDS
from avfusion.utils.device import DEVICE_CHOICES, is_device_name



@dataclass
class DataConfig:
    # A manifest (CSV / JSONL) or shards: a folder from `avfusion prepare`, a .tar, a brace pattern,
    # URLs joined with ::, a pipe: / http URL (avfusion.data.sources). A shard folder's labels.csv
    # is the label map when `labels` is not given.
    train: str | None = None
    val: str | None = None
    labels: str | None = None  # label map, AudioSet's class_labels_indices.csv layout
    # auto: from the label map and the rows (streamed shards: their __meta__)
    task: Literal["auto", "multilabel", "single", "multihead"] = "auto"
    batch_size: int = 8
    eval_batch_size: int = 8
    num_workers: int = 2
    pin_memory: bool = True
    prefetch_factor: int = 2
    eval_clips: int = 4  # K uniformly spaced clips per video at evaluation (MBT: 4)
    eval_crops: int = 3  # spatial crops per clip (the papers' 3-crop protocol)
    balanced_sampler: bool = False  # AudioSet-style per-label weights
    # Local shards are read by random access (the same sampler, exact resume and balanced sampling
    # as a manifest); URLs are streamed. "stream" streams local shards too.
    read_shards: str = "auto"  # auto | random | stream
    # Local shards: keep each sample decoded in memory once read (small data sets read for many
    # epochs, e.g. the demo), the frames and the audio's log-mel (computed once per sample: a
    # clip's audio then starts on its 10 ms frame grid); clips are still cut, cropped and
    # augmented per sample. Only the model's modalities are kept.
    cache_decoded: bool = False
    shuffle_buffer: int = 1000  # streamed shards: samples in the shuffle buffer
    # Streamed shards: samples in an epoch, all ranks together (default: what the shards say, from
    # a prepare.json beside them or their __meta__; another number is refused); every rank runs
    # epoch_samples // (world x batch_size) steps.
    epoch_samples: int | None = None
    # A shard folder that prepare has not finished, or that lacks shards it wrote, is refused
    # naming what is missing; true uses the shards that are there (avfusion.data.sources.resolve).
    allow_partial: bool = False
    # Training samples that cannot be used (a file that will not open, a truncated or damaged
    # stream under the clip) stop the run naming the row (0), or up to this many are left out of
    # their batch, counted in metrics.jsonl ("skipped_samples") and named on stderr.
    skip_bad_samples: int = 0
    mixup_alpha: float = 0.0  # Beta(alpha, alpha); one lambda for both modalities, labels mixed
    # Where the feature work runs: "workers" (loader workers: fbank, SpecAugment, video
    # normalisation per sample), "device" (on the batch where the model runs: workers only decode
    # and crop), "auto" (device on a GPU, workers on a CPU). avfusion.data.features.
    features_on: str = "auto"
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
    epochs: float = 50.0
    min_lr: float = 0.0


@dataclass
class LossConfig:
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
    max_steps: int | None = None  # the run's length in optimizer steps; None: schedule.epochs
    save_every: int = 500
    log_every: int = 10
    device: str = "auto"  # auto (this rank's GPU, else the CPU) | cpu | cuda | cuda:N (avfusion.utils.device)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile, with a fallback to eager if it fails
    grad_accum: int = 1
    grad_checkpointing: bool = False
    # DDP: set when some parameters get no gradient in a step (e.g. batches where a modality is
    # absent from every clip leave that stream unused).
    find_unused_parameters: bool = False
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    # Steps whose loss or gradient norm is NaN / inf that may be skipped (no update; counted and
    # logged); one more stops the run. 0: the first one stops it.
    skip_nonfinite: int = 0


# Keys that once existed: a config using one is refused naming what replaced it.
REMOVED_KEYS = {
    "loss.task": "data.task (one place for the task kind)",
    "schedule.max_steps": "run.max_steps (one place for the run's length; --max-steps)",
    "run.eval_every": "nothing: data.val is evaluated at the end of the run",
}


@dataclass
class TrainConfig:
    removed_keys: ClassVar[dict[str, str]] = REMOVED_KEYS
    model: str = "mbt_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    pretrained_backbone: str | None = None  # ImageNet ViT weights to start from
    # fine-tuning / probing: a model directory, a released model's name (avfusion models --pretrained) or
    # hf-hub:ORG/NAME; the classifier is re-initialised when the label map differs from the model's
    init_from: str | None = None
    linear_probe: bool = False  # freeze everything but the classifier heads
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        validate(self)


CONTRASTIVE_OUTPUTS = ("audio", "video", "fusion")  # ContrastiveHead's projectable outputs


def validate(cfg: TrainConfig) -> None:
    """Check every value of ``cfg``; raise one ConfigError listing each bad key and its value."""
    errors: list[str] = []

    def need(key: str, ok: bool, want: str) -> None:
        if not ok:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            errors.append(f"{key} must be {want}, got {value!r}")

    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def integer(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def pair(x: Any) -> bool:
        return isinstance(x, (list, tuple)) and len(x) == 2 and all(num(v) for v in x)

    d, o, s, l, c, r, a = cfg.data, cfg.optim, cfg.schedule, cfg.loss, cfg.contrastive, cfg.run, cfg.data.augment
    need("model", isinstance(cfg.model, str) and bool(cfg.model), "a registered model name")
    need("model_overrides", isinstance(cfg.model_overrides, Mapping), "a mapping")

    for key, choices in (("data.task", (*TASK_KINDS, "auto")),
                         ("optim.name", ("sgd", "adamw")), ("schedule.name", ("cosine", "constant")),
                         ("loss.aggregation", ("auto", "mean", "sum")), ("run.precision", ("auto", "fp32", "bf16"))):
        section, name = key.split(".")
        need(key, getattr(getattr(cfg, section), name) in choices, "one of " + ", ".join(choices))

    for key in ("data.batch_size", "data.eval_batch_size", "data.prefetch_factor", "data.eval_clips",
                "contrastive.proj_dim", "run.save_every", "run.log_every", "run.grad_accum"):
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        need(key, integer(v) and v >= 1, "an integer >= 1")
    for key in ("data.num_workers", "data.shuffle_buffer", "schedule.warmup_steps", "contrastive.proj_hidden",
                "run.skip_nonfinite", "data.skip_bad_samples", "data.augment.freq_mask", "data.augment.time_mask",
                "data.augment.num_freq_masks", "data.augment.num_time_masks", "data.augment.freq_jitter"):
        *sections, name = key.split(".")
        obj: Any = cfg
        for part in sections:
            obj = getattr(obj, part)
        v = getattr(obj, name)
        need(key, integer(v) and v >= 0, "an integer >= 0")
    need("run.max_steps", r.max_steps is None or (integer(r.max_steps) and r.max_steps >= 1),
         "empty (None) or an integer >= 1")
    need("data.eval_crops", d.eval_crops in (1, 3), "1 (centre crop) or 3 (three-crop)")
    need("data.read_shards", d.read_shards in ("auto", "random", "stream"), "auto, random or stream")
    need("data.features_on", d.features_on in ("auto", "workers", "device"), "auto, workers or device")
    need("data.epoch_samples", d.epoch_samples is None or (integer(d.epoch_samples) and d.epoch_samples >= 1),
         "empty (None) or an integer >= 1")
    need("run.seed", integer(r.seed) and 0 <= r.seed < 2**63, "an integer in [0, 2**63)")
    need("run.out", isinstance(r.out, str) and bool(r.out.strip()), "a folder path")
    need("run.device", is_device_name(r.device), DEVICE_CHOICES)

    need("optim.lr", num(o.lr) and o.lr > 0, "a number > 0")
    need("optim.momentum", num(o.momentum) and 0 <= o.momentum < 1, "in [0, 1)")
    need("optim.betas", pair(o.betas) and all(0 <= b < 1 for b in o.betas), "two numbers in [0, 1)")
    need("optim.weight_decay", num(o.weight_decay) and o.weight_decay >= 0, "a number >= 0")
    need("optim.clip_grad_norm", o.clip_grad_norm is None or (num(o.clip_grad_norm) and o.clip_grad_norm >= 0),
         "empty (None) or a number >= 0 (0: no clipping)")
    if o.nesterov and o.name == "sgd":
        need("optim.nesterov", num(o.momentum) and o.momentum > 0, "false when optim.momentum is 0")

    need("schedule.warmup_epochs", num(s.warmup_epochs) and s.warmup_epochs >= 0, "a number >= 0")
    if r.max_steps is None:  # the length of the run comes from the epochs
        need("schedule.epochs", num(s.epochs) and s.epochs > 0, "a number > 0 (or set run.max_steps)")
    lr_ok = num(o.lr) and o.lr > 0  # (a bad optim.lr is reported once, above)
    need("schedule.min_lr", num(s.min_lr) and s.min_lr >= 0 and (not lr_ok or s.min_lr <= o.lr),
         f"a number in [0, optim.lr = {o.lr}]")

    need("loss.label_smoothing", num(l.label_smoothing) and 0 <= l.label_smoothing < 1, "in [0, 1)")
    need("loss.weights", isinstance(l.weights, Mapping) and all(isinstance(k, str) and num(v) and v >= 0
                                                               for k, v in l.weights.items()),
         "a mapping of output name to a number >= 0")
    need("contrastive.temperature", num(c.temperature) and c.temperature > 0, "a number > 0")
    need("contrastive.pairs", isinstance(c.pairs, (list, tuple)) and len(c.pairs) > 0 and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and p[0] != p[1] and set(p) <= set(CONTRASTIVE_OUTPUTS)
        for p in c.pairs), f"a list of pairs of two different outputs among {list(CONTRASTIVE_OUTPUTS)}")

    need("data.mixup_alpha", num(d.mixup_alpha) and d.mixup_alpha >= 0, "a number >= 0 (0: no mixup)")
    need("data.augment.crop_scale", pair(a.crop_scale) and 0 < a.crop_scale[0] <= a.crop_scale[1] <= 1,
         "two numbers 0 < min <= max <= 1")
    need("data.augment.crop_ratio", pair(a.crop_ratio) and 0 < a.crop_ratio[0] <= a.crop_ratio[1],
         "two numbers 0 < min <= max")
    need("data.augment.flip", num(a.flip) and 0 <= a.flip <= 1, "a probability in [0, 1]")
    need("data.augment.color_jitter", num(a.color_jitter) and a.color_jitter >= 0, "a number >= 0")
    if errors:
        raise ConfigError("; ".join(errors))

