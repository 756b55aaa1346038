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


def _legacy_split(modules: dict[str, nn.Module]) -> tuple[list[str], list[str]]:
    """Parameter names in (decayed, not decayed) as the rule before issue 15 grouped them: a
    "token" or "pos_embed" in the name, a leading "bottleneck" or a 1-D shape meant no decay.
    A Zorro model without fusion tokens then carried an empty ``fusion_tokens`` (no decay), right
    after its token parameters; it is put back here so the old positions line up."""
    decay: list[str] = []
    no_decay: list[str] = []
    for prefix, module in modules.items():
        named = [(n, p.ndim) for n, p in module.named_parameters() if p.requires_grad]
        if getattr(module, "fusion_tokens", ...) is None and getattr(getattr(module, "cfg", None), "family", "") == "masked":
            last = max(i for i, (n, _) in enumerate(named) if n.startswith("tokens."))
            named.insert(last + 1, ("fusion_tokens", 3))
        for name, ndim in named:
            old = ndim <= 1 or "pos_embed" in name or "token" in name or name.startswith("bottleneck")
            (no_decay if old else decay).append(f"{prefix}.{name}")
    return decay, no_decay


def remap_legacy_optimizer_state(state: dict, modules: dict[str, nn.Module]) -> dict | None:
    """An optimizer state saved with the weight-decay groups of before issue 15, re-laid out for
    today's groups (each parameter keeps its moments; only its group changes); None when ``state``
    is not in that layout (today's states load as they are, anything else is left to torch)."""
    groups = state.get("param_groups", [])
    decay, no_decay = (list(d) for d in split_weight_decay(modules))
    sizes = [len(g["params"]) for g in groups]
    old_decay, old_no_decay = _legacy_split(modules)
    if sizes == [len(decay), len(no_decay)] or sizes != [len(old_decay), len(old_no_decay)]:
        return None
    saved_index = dict(zip(old_decay + old_no_decay, groups[0]["params"] + groups[1]["params"]))
    new_state = {}
    for i, name in enumerate(decay + no_decay):
        if saved_index[name] in state["state"]:
            new_state[i] = state["state"][saved_index[name]]
    return {"state": new_state, "param_groups": [
        {**groups[0], "params": list(range(len(decay)))},
        {**groups[1], "params": list(range(len(decay), len(decay) + len(no_decay)))},
    ]}


def build_optimizer(modules: dict[str, nn.Module], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(modules, cfg.weight_decay)
    fused = cfg.fused if cfg.fused is not None else device.type == "cuda"
    if cfg.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                                     fused=fused or None)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)
    # Runs saved before the weight-decay groups were fixed still resume (their moments follow the parameters).
    opt.register_load_state_dict_pre_hook(lambda _opt, sd: remap_legacy_optimizer_state(sd, modules))
    return opt


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
