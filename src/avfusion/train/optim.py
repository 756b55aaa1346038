"""Optimizer with weight-decay groups, and the linear warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from avfusion.train.config import OptimConfig, ScheduleConfig


def split_weight_decay(modules: dict[str, nn.Module]) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """Trainable parameters as (decayed, never decayed), each ``prefix.name -> parameter``.

    Never decayed: what a module's ``no_weight_decay()`` names (an AVModel's named sets:
    position embeddings, CLS / bottleneck / fusion tokens, readout queries, latents and every
    1-D parameter; models/base.py ``no_weight_decay_sets``) and, for modules without one (the
    contrastive projectors), every 1-D parameter. Everything else, every >= 2-D weight
    (linear layers, patch-embedding kernels), is decayed. A parameter shared by two modules is
    placed once.
    """
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for prefix, module in modules.items():
        named = dict(module.named_parameters())
        skip = set(module.no_weight_decay()) if hasattr(module, "no_weight_decay") else set()
        stale = sorted(skip - set(named))
        if stale:  # a renamed parameter would silently start being decayed
            raise ValueError(f"{type(module).__name__}.no_weight_decay() names parameters it does not have: "
                             f"{stale[:5]}")
        for name, p in named.items():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if name in skip or p.ndim <= 1 else decay)[f"{prefix}.{name}"] = p
    return decay, no_decay


def param_groups(modules: dict[str, nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and never-decayed embeddings / tokens / queries / latents /
    norms / biases (see :func:`split_weight_decay`)."""
    decay, no_decay = split_weight_decay(modules)
    groups = [{"params": list(decay.values()), "weight_decay": weight_decay},
              {"params": list(no_decay.values()), "weight_decay": 0.0}]
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
