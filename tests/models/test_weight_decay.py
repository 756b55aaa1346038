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
