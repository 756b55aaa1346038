"""From a TrainConfig to a trained model directory: data, model, task, fit, final evaluation.

This is what ``avfusion train`` and ``avfusion pretrain`` run (also under torchrun).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from avfusion.data.clips import ClipConfig
from avfusion.data.datasets import collate, dataset_for, open_source, rows_of, streamed
from avfusion.data.features import BatchFeatures
from avfusion.data.manifest import LabelMap
from avfusion.data.mixup import mixup
from avfusion.data.samplers import balanced_sampler
from avfusion.data.shards import StreamFacts, stream_facts
from avfusion.data.sources import Source
from avfusion.errors import ConfigError, UserError
from avfusion.eval.evaluate import evaluate_source, infer_task
from avfusion.eval.retrieval import save_projectors
from avfusion.heads.projector import ContrastiveHead
from avfusion.models import create_model
from avfusion.core.config import ModelConfig
from avfusion.models.pretrained import load_config, load_pretrained
from avfusion.train.checkpoint import candidates
from avfusion.train.config import TrainConfig
from avfusion.utils.device import resolve_device
from avfusion.utils.distributed import DistInfo, cleanup, gather_objects, init_distributed
from avfusion.train.loop import FitResult, fit
from avfusion.utils.lock import lock_run_folder
from avfusion.utils.files import atomic_write
from avfusion.train.task import Task
from avfusion.zoo import HF_HUB_PREFIX, is_pretrained_name, resolve_model


def resolve_task(cfg: TrainConfig, labels_path: str, rows: list | None, facts: StreamFacts | None = None) -> str:
    """The task kind: as configured, else from the label map (heads -> multihead) and the rows
    (every row exactly one label -> single, else multilabel); for streamed shards (no rows), what
    their ``__meta__`` says (``facts``). ``data.task=single`` on shards that say multilabel (a row
    without exactly one label) is refused; multilabel on single-label data is a choice, as for a
    manifest."""
    task, said = cfg.data.task, facts.task if facts is not None else None
    if said is not None and task == "single" and said == "multilabel":
        raise ConfigError(f"data.task=single, but {facts.where} says multilabel (rows without exactly one "  # type: ignore[union-attr]
                          "label): leave data.task unset (auto), or set it to multilabel")
    if task != "auto":
        return task
    if LabelMap.read(labels_path).heads or rows is not None:
        return infer_task(labels_path, rows or [])
    if said is None:
        raise ConfigError("streamed shards written without a __meta__ member (by an older avfusion prepare) do not "
                          "tell single- from multi-label before training: set data.task (single | multilabel)")
    return said


def epoch_length(cfg: TrainConfig, facts: StreamFacts | None) -> int | None:
    """Streamed training's epoch in samples: ``data.epoch_samples``, else what the shards say; a
    setting that differs from what they say is refused (it is not theirs: run.max_steps or
    schedule.epochs shorten a run)."""
    set_, said = cfg.data.epoch_samples, facts.samples if facts is not None else None
    if set_ is not None and said is not None and set_ != said:
        raise ConfigError(f"data.epoch_samples={set_}, but the shards hold {said} samples ({facts.where}): "  # type: ignore[union-attr]
                          "leave data.epoch_samples unset, or shorten the run with run.max_steps / schedule.epochs")
    return set_ if set_ is not None else said


def shard_facts(cfg: TrainConfig, src: Source, info: DistInfo) -> StreamFacts | None:
    """What streamed training shards say about themselves (None for other sources), read once on
    the main rank and given to every rank (a one-line error too)."""
    if not streamed(src, cfg.data.read_shards):
        return None
    got: tuple[StreamFacts | None, UserError | None] = (None, None)
    if info.is_main:
        try:  # counting every shard only when the setting does not say it
            got = (stream_facts(src, count=cfg.data.epoch_samples is None), None)
        except UserError as e:
            got = (None, e)
    facts, error = gather_objects(got, info)[0]  # type: ignore[misc]
    if error is not None:
        raise error
    return facts


def clip_config(model_cfg: Any, cfg: TrainConfig) -> ClipConfig:
    d = cfg.data
    # Samples carry only what the model reads: a unimodal model's loader skips the other stream.
    return ClipConfig.from_model(model_cfg, augment=d.augment, eval_clips=d.eval_clips, eval_crops=d.eval_crops,
                                 modalities=tuple(model_cfg.modalities))


def model_for_run(cfg: TrainConfig, labels: LabelMap | None, task: str):
    """The model to train, sized for the label map: from a registry name, an ImageNet ViT, or
    ``init_from`` (fine-tuning / probing): a model directory, a released model's name or hf-hub:ORG/NAME,
    whose classifier is replaced by a freshly initialised one when the label map differs."""
    splits = labels.head_sizes() if labels is not None and task == "multihead" else None
    sizes = {} if labels is None else dict(num_classes=labels.num_classes, class_names=labels.names,
                                           class_splits=splits, task=task)
    if cfg.init_from:
        overrides = dict(cfg.model_overrides)
        if labels is not None:  # the label map sizes the new head; a recipe's num_classes must not block loading
            overrides = {k: v for k, v in overrides.items() if k not in sizes}
        model = load_pretrained(resolve_model(cfg.init_from), **overrides)
        if labels is None:
            return model
        if model.cfg.num_classes != labels.num_classes or model.cfg.class_names != labels.names:
            if os.environ.get("RANK", "0") == "0":  # once per job, not per rank
                print(f"init_from {cfg.init_from}: its classes ({model.cfg.num_classes}) are not the label map's "
                      f"({labels.num_classes}); the classifier is re-initialised", file=sys.stderr)
            model.reset_classifier(labels.num_classes, labels.names, task, splits)
        else:
            model.cfg = model.cfg.replace(class_splits=splits, task=task)
    else:
        kw = dict(cfg.model_overrides)
        if cfg.pretrained_backbone:
            kw["pretrained_backbone"] = cfg.pretrained_backbone
        model = create_model(cfg.model, **{**kw, **sizes})
    if cfg.linear_probe:
        heads = {id(p) for h in model.heads().values() for p in h.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in heads)
    return model


def normalised_as_trained(out: Path, model_cfg: ModelConfig, info: DistInfo = DistInfo()) -> ModelConfig:
    """``model_cfg`` with the audio normalisation of the run's newest checkpoint where they differ.

    They differ only for a run started before the preset alone decided the normalisation: its
    ``preprocess.audio_norm=ast`` then kept MBT's mean and std, and its checkpoint's config.json
    says so. Resumed, it goes on with the features it was trained on (fit refuses any other
    change of config)."""
    found = candidates(out)
    try:
        trained = load_config(found[0]).preprocess if found else None
    except (OSError, ValueError):  # a damaged checkpoint: fit sets it aside and says why
        trained = None
    if trained is None or trained.audio_stats() == model_cfg.preprocess.audio_stats():
        return model_cfg
    if info.is_main:
        print(f"resuming with the audio normalisation this run was trained with: audio_norm {trained.audio_norm!r}, "
              f"mean {trained.audio_mean}, std {trained.audio_std} (docs/data.md section 4)", file=sys.stderr)
    return model_cfg.replace(preprocess=dataclasses.replace(
        model_cfg.preprocess, audio_norm=trained.audio_norm, audio_mean=trained.audio_mean, audio_std=trained.audio_std))


def run_training(cfg: TrainConfig, mode: str = "supervised") -> FitResult:
    """Train per ``cfg`` ("supervised" or "contrastive"); evaluates on ``data.val`` at the end."""
    if is_pretrained_name(cfg.model) or cfg.model.startswith(HF_HUB_PREFIX):
        raise ConfigError(f"model {cfg.model!r} is a pretrained model, not an architecture: start training from "
                          f"it with init_from={cfg.model} (--init-from)")
    if not cfg.data.train:
        raise ConfigError("training needs data.train (a manifest or shards)")
    info = init_distributed(resolve_device(cfg.run.device, key="run.device").type)
    try:
        return _run(cfg, mode, info)
    finally:
        cleanup(info)


def _run(cfg: TrainConfig, mode: str, info: DistInfo) -> FitResult:
    # The run folder is locked first: a busy or unusable --out fails before any work, and the
    # final evaluation is written under the same lock as the training.
    with lock_run_folder(cfg.run.out, info):
        return _run_locked(cfg, mode, info)


def _run_locked(cfg: TrainConfig, mode: str, info: DistInfo) -> FitResult:
    src, labels_path, rows = open_source(cfg.data.train, cfg.data.labels, cfg.data.allow_partial)
    if mode == "supervised" and labels_path is None:
        raise ConfigError("supervised training needs data.labels (a label map)")
    facts = shard_facts(cfg, src, info)
    labels, task_kind = None, "multilabel"
    if labels_path:
        task_kind = resolve_task(cfg, labels_path, rows, facts)
        labels = LabelMap.read(labels_path, task_kind)
    torch.manual_seed(cfg.run.seed)  # the initial weights depend on the seed only
    model = model_for_run(cfg, labels, task_kind)
    model.cfg = normalised_as_trained(Path(cfg.run.out), model.cfg, info)
    clips = clip_config(model.cfg, cfg)
    on_device = cfg.data.features_on == "device" or (
        cfg.data.features_on == "auto" and resolve_device(cfg.run.device, info.local_rank).type == "cuda")
    features = None
    if on_device:  # the workers only decode and crop; the batch gets its features on the device
        # With the decoded cache each clip's log-mel is cut from its sample's, computed once; the
        # batch gets its augmentation (and the video's conversion).
        audio_output = "log_mel" if cfg.data.cache_decoded else "waveform"
        clips = dataclasses.replace(clips, audio_output=audio_output, video_output="uint8")
        features = BatchFeatures(clips, train=True)
    # Contrastive pre-training reads no labels (a label map only sizes the heads for later).
    # Bad rows come back as markers that the loop (the main process) turns into one line or a
    # counted skip (data.skip_bad_samples), never a worker's traceback.
    epoch_samples = epoch_length(cfg, facts)
    train_set = dataset_for(src, rows, labels if mode == "supervised" else None, clips, train=True, on_error="mark",
                            read=cfg.data.read_shards, epoch_samples=epoch_samples, batch_size=cfg.data.batch_size,
                            seed=cfg.run.seed, shuffle=cfg.data.shuffle_buffer, cache=cfg.data.cache_decoded)

    contrastive = None
    if mode == "contrastive":
        for head in model.heads().values():  # classifiers take no part in the contrastive loss
            head.requires_grad_(False)
        c = cfg.contrastive
        dim = model.num_features  # hierarchical backbones (Zorro-Swin, -HiP) end wider than embed_dim
        contrastive = ContrastiveHead(dim, c.pairs, c.proj_dim, c.proj_hidden, c.temperature)
    task = Task(model, mode, task_kind, cfg.loss.label_smoothing, cfg.loss.aggregation, cfg.loss.weights, contrastive)

    sampler = None
    if cfg.data.balanced_sampler:
        rows = rows_of(train_set)
        if rows is None or labels is None:
            raise ConfigError("data.balanced_sampler needs the rows' labels: a manifest or local shards, and a label map")
        sampler = balanced_sampler(rows, labels, rank=info.rank, world_size=info.world_size, seed=cfg.run.seed)

    if cfg.data.mixup_alpha > 0 and task_kind == "multihead":
        raise ConfigError("mixup of multi-head (EPIC) labels is not supported: set data.mixup_alpha=0")
    alpha = cfg.data.mixup_alpha

    def batch_transform(batch: dict, g: torch.Generator) -> dict:  # the batch's features, then mixup, per step
        if features is not None:
            batch = features(batch, g)
        return mixup(batch, alpha, labels.num_classes, generator=g) if alpha > 0 else batch

    transform = batch_transform if features is not None or alpha > 0 else None

    out = Path(cfg.run.out)
    # fit writes OUT/train_config.json, once a resumed checkpoint's config is accepted.
    result = fit(cfg, task, train_set, collate, info, batch_transform=transform, sampler=sampler)
    if contrastive is not None and info.is_main:
        # The projectors go with the model directory fit wrote: retrieval (eval --retrieval) ranks in their space.
        c = cfg.contrastive
        save_projectors(out, contrastive, {"dim": model.num_features, "out_dim": c.proj_dim, "hidden": c.proj_hidden,
                                           "temperature": c.temperature, "pairs": c.pairs, "model": model.cfg.name})

    if cfg.data.val and mode == "supervised" and result.steps > 0:
        report = evaluate_source(model, cfg.data.val, labels_path, batch_size=cfg.data.eval_batch_size,
                                   num_workers=cfg.data.num_workers, eval_clips=cfg.data.eval_clips,
                                   eval_crops=cfg.data.eval_crops, info=info, task=task_kind,
                                   allow_partial=cfg.data.allow_partial)
        if info.is_main:
            atomic_write(out / "eval.json", (json.dumps(report, indent=2) + "\n").encode())
            print(f"validation: {json.dumps(report['summary'])}", file=sys.stderr)
    return result
