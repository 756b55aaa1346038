"""Optimizer with weight-decay groups, and the linear warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from avfusion.train.config import OptimConfig, ScheduleConfig


def param_groups(modules: dict[str, nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and never-decayed embeddings / tokens / norms / biases."""
    decay, no_decay = [], []
    for prefix, module in modules.items():
        skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else set()
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name in skip or p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(modules: dict[str, nn.Module], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(modules, cfg.weight_decay)
    fused = cfg.fused if cfg.fused is not None else device.type == "cuda"
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused or None)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def lr_factor(step: int, total_steps: int, warmup_steps: int, name: str, min_factor: float) -> float:
    """Multiplier of the base LR at ``step`` (0-based): linear warm-up, then cosine (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int,
                    steps_per_epoch: int, base_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = cfg.warmup_steps or int(round(cfg.warmup_epochs * steps_per_epoch))
    min_factor = cfg.min_lr / base_lr if base_lr else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, warmup, cfg.name, min_factor))
