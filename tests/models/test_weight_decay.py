"""Weight decay from explicit named sets, checked both ways on every registered tiny model.

The expectations here are written from parameter *names and shapes* (what each family is
documented to have), independently of how the models build their sets (by parameter identity).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import avfusion
from avfusion.heads.projector import ContrastiveHead
from avfusion.models import list_models
from avfusion.train.optim import param_groups, split_weight_decay

TINY = list_models("*_tiny*")

# Learned embeddings that are never decayed, by the name they have in each family.
EMBEDDING_KINDS = {
    "pos_embed": ("tokens.pos_embed.",),
    "cls_token": ("tokens.cls_token.",),
    "bottleneck": ("bottleneck",),
    "fusion_tokens": ("fusion_tokens",),
    "readout_query": ("readout.query.",),
    "latents": ("stages.",),  # stages.<s>.latent_tokens.<group> (Zorro-HiP)
}
FAMILY_SETS = {
    "streams": {"pos_embed", "cls_token", "1d"},  # + "bottleneck" when the streams meet through one
    "masked": {"pos_embed", "readout_query", "1d"},  # + "fusion_tokens" when there are any
    "swin": {"pos_embed", "fusion_tokens", "readout_query", "1d"},
    "hip": {"pos_embed", "readout_query", "latents", "1d"},
}


def _is_embedding(name: str) -> bool:
    return (name.startswith(("tokens.pos_embed.", "tokens.cls_token.", "readout.query."))
            or name in ("bottleneck", "fusion_tokens") or ".latent_tokens." in name)


@pytest.mark.parametrize("name", TINY)
def test_decay_sets_both_ways(name: str) -> None:
    model = avfusion.create_model(name)
    sets = model.no_weight_decay_sets()
    family = model.cfg.family
    expected_kinds = set(FAMILY_SETS[family])
    if family == "streams" and model.bottleneck is not None:
        expected_kinds.add("bottleneck")
    if family == "masked" and model.cfg.num_fusion_tokens > 0:
        expected_kinds.add("fusion_tokens")
    assert set(sets) == expected_kinds, f"{name}: named sets {sorted(sets)}"
    # Each named set holds exactly the parameters of its kind (by name), 1d the other 1-D ones.
    for kind, names in sets.items():
        if kind == "1d":
            assert all(model.get_parameter(n).ndim <= 1 and not _is_embedding(n) for n in names), kind
        else:
            assert names and all(n.startswith(EMBEDDING_KINDS[kind]) for n in names), (kind, sorted(names))
    # The sets are disjoint.
    listed = [n for names in sets.values() for n in names]
    assert len(listed) == len(set(listed))

    decay, no_decay = split_weight_decay({"model": model})
    decay = {n.removeprefix("model.") for n in decay}
    no_decay = {n.removeprefix("model.") for n in no_decay}
    every = {n for n, _ in model.named_parameters()}
    assert decay | no_decay == every and not decay & no_decay  # each parameter in exactly one group
    assert no_decay == set(listed) == model.no_weight_decay()
    for n, p in model.named_parameters():
        # Direction 1: embeddings, tokens, queries, latents and every 1-D parameter are not decayed.
        if _is_embedding(n) or p.ndim <= 1:
            assert n in no_decay, f"{name}: {n} {tuple(p.shape)} is decayed"
        # Direction 2: every other weight is, patch-embedding kernels included.
        else:
            assert n in decay, f"{name}: {n} {tuple(p.shape)} is not decayed"
    kernels = [n for n in every if n.startswith("tokens.embed.") and n.endswith(".proj.weight")]
    assert kernels and set(kernels) <= decay


def test_the_old_bugs_stay_fixed() -> None:
    """'token' in a name used to exempt the patch kernels (tokens.embed.*.proj.weight) and miss
    Zorro's readout queries."""
    mbt, zorro = avfusion.create_model("mbt_tiny"), avfusion.create_model("zorro_vit_tiny")
    for model in (mbt, zorro):
        nwd = model.no_weight_decay()
        assert "tokens.embed.audio.proj.weight" not in nwd and "tokens.embed.video.proj.weight" not in nwd
        assert "tokens.embed.audio.proj.bias" in nwd  # 1-D
    assert {"readout.query.audio", "readout.query.global", "fusion_tokens"} <= zorro.no_weight_decay()
    assert {"tokens.cls_token.audio", "tokens.pos_embed.video", "bottleneck"} <= mbt.no_weight_decay()
    assert "blocks.audio.0.attn.qkv.weight" not in mbt.no_weight_decay()


def test_optimizer_groups_with_projectors() -> None:
    model = avfusion.create_model("zorro_vit_tiny")
    head = ContrastiveHead(model.num_features, [("audio", "video")], out_dim=8, hidden=16)
    groups = param_groups({"model": model, "contrastive": head}, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    every = [*model.parameters(), *head.parameters()]
    assert len(ids) == len(set(ids)) == len(every)
    decayed = {id(p) for p in groups[0]["params"]}
    assert id(head.proj["audio"].net[0].weight) in decayed and id(head.proj["audio"].net[0].bias) not in decayed
    assert id(model.tokens.embed["video"].proj.weight) in decayed and id(model.readout.query["fusion"]) not in decayed
    torch.optim.AdamW(groups)  # torch accepts them: no parameter twice


def test_a_stale_name_is_an_error() -> None:
    class Stale(nn.Linear):
        def no_weight_decay(self) -> set[str]:
            return {"bias", "gone"}

    with pytest.raises(ValueError, match="gone"):
        split_weight_decay({"m": Stale(2, 2)})


# -- runs saved with the old groups still resume ----------------------------------------------
def _old_rule(name: str, p: torch.Tensor) -> bool:
    """The rule before issue 15: True = not decayed."""
    return p.ndim <= 1 or "pos_embed" in name or "token" in name or name.startswith("bottleneck")


@pytest.mark.parametrize("name", ["mbt_tiny", "zorro_vit_tiny", "zorro_vit_tiny_independent", "zorro_hip_tiny"])
def test_optimizer_state_saved_with_the_old_groups_resumes(name: str) -> None:
    from avfusion.train.config import OptimConfig
    from avfusion.train.optim import build_optimizer

    torch.manual_seed(0)
    model = avfusion.create_model(name, head_zero_init=False)
    named = list(model.named_parameters())
    if model.cfg.family == "masked" and model.cfg.num_fusion_tokens == 0:
        # The old model carried an empty fusion_tokens right after its token parameters.
        last = max(i for i, (n, _) in enumerate(named) if n.startswith("tokens."))
        named.insert(last + 1, ("fusion_tokens", nn.Parameter(torch.zeros(1, 0, model.cfg.embed_dim))))
    old_groups = [{"params": [p for n, p in named if not _old_rule(n, p)], "weight_decay": 0.05},
                  {"params": [p for n, p in named if _old_rule(n, p)], "weight_decay": 0.0}]
    old_opt = torch.optim.AdamW(old_groups, lr=1e-3)
    out = model(model.example_inputs(2))
    sum(o.square().sum() for o in out.outputs.values()).backward()
    old_opt.step()
    saved = old_opt.state_dict()
    moments = {n: old_opt.state[p]["exp_avg"].clone() for n, p in named if p.numel() and p in old_opt.state}

    opt = build_optimizer({"model": model}, OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05), torch.device("cpu"))
    opt.load_state_dict(saved)
    assert len(moments) == len(list(model.parameters()))  # every (non-empty) parameter has moments
    for n, p in model.named_parameters():  # ... and keeps its own
        torch.testing.assert_close(opt.state[p]["exp_avg"], moments[n], rtol=0, atol=0)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0
    assert id(model.tokens.embed["audio"].proj.weight) in decayed  # the new groups, the old moments
    opt.step()  # and it runs
    # Today's states load as they are.
    again = build_optimizer({"model": model}, OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05),
                            torch.device("cpu"))
    again.load_state_dict(opt.state_dict())
    for p in model.parameters():
        torch.testing.assert_close(again.state[p]["exp_avg"], opt.state[p]["exp_avg"], rtol=0, atol=0)
