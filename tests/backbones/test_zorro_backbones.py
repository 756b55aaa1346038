"""Zorro-Swin and Zorro-HiP: the model surface, Zorro's purity (omission and perturbation),
the fast path against the dense reference, and meta-device builds (for `avfusion flops`)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from avfusion.backbones import ZorroHiP, ZorroSwin
from avfusion.models import ModelConfig, create_model, get_model_config

TINY = ["zorro_swin_tiny", "zorro_hip_tiny"]
BASE = ["zorro_swin_base", "zorro_hip_base"]
TOL = dict(atol=1e-6, rtol=1e-6)


def randomised(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny model with every parameter random (heads are zero-initialised by default)."""
    torch.manual_seed(seed)
    m = create_model(name, **overrides)
    with torch.no_grad():
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return m.eval()


def inputs(m: torch.nn.Module, seed: int = 1, batch: int = 2) -> dict[str, torch.Tensor]:
    return m.example_inputs(batch, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_every_parameter(name: str) -> None:
    m = randomised(name).train()
    out = m(inputs(m))
    assert out.logits.shape == (2, 10)
    assert set(out.outputs) == {"audio", "video", "fusion", "global"}
    assert all(f.shape == (2, m.num_features) for f in out.features.values())
    assert out.notes == []
    sum(o.pow(2).mean() for o in out.outputs.values()).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"{n} got no gradient"


@pytest.mark.parametrize("name", TINY)
def test_unimodal_outputs_are_exact_by_omission(name: str) -> None:
    m = randomised(name)
    x = inputs(m)
    with torch.no_grad():
        both = m(x)
        for only, absent in (("audio", "video"), ("video", "audio")):
            uni = m({only: x[only]})
            torch.testing.assert_close(uni.outputs[only], both.outputs[only], **TOL)
            torch.testing.assert_close(uni.features[only], both.features[only], **TOL)
            torch.testing.assert_close(uni.logits, uni.outputs[only])
            assert absent not in uni.outputs
            assert len(uni.notes) == 1 and f"{absent} absent" in uni.notes[0]


@pytest.mark.parametrize("name", TINY)
def test_unimodal_outputs_ignore_the_other_modality(name: str) -> None:
    m = randomised(name)
    x = inputs(m)
    with torch.no_grad():
        ref = m(x)
        for changed, kept in (("video", "audio"), ("audio", "video")):
            y = dict(x, **{changed: torch.randn_like(x[changed])})
            out = m(y)
            torch.testing.assert_close(out.outputs[kept], ref.outputs[kept], **TOL)
            # The fusion and global outputs do read both modalities.
            for o in ("fusion", "global", changed):
                assert (out.outputs[o] - ref.outputs[o]).abs().max() > 1e-3, (changed, o)


@pytest.mark.parametrize("name", TINY)
def test_fast_path_equals_dense_reference(name: str) -> None:
    fast, dense = randomised(name, attn_impl="auto"), randomised(name, attn_impl="dense")
    x = inputs(fast)
    with torch.no_grad():
        for given in (x, {"audio": x["audio"]}, {"video": x["video"]}):
            a, d = fast(given), dense(given)
            for o in a.outputs:
                torch.testing.assert_close(a.outputs[o], d.outputs[o], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_grad_checkpointing_matches(name: str) -> None:
    grads = []
    for ckpt in (False, True):
        m = randomised(name).train()
        m.set_grad_checkpointing(ckpt)
        m(inputs(m)).logits.sum().backward()
        grads.append([p.grad for p in m.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_surface(name: str) -> None:
    m = create_model(name)
    assert set(m.heads()) == {"audio", "video", "fusion", "global"}
    m.reset_classifier(3)
    assert m(inputs(m)).logits.shape == (2, 3) and m.cfg.num_classes == 3
    nwd = m.no_weight_decay()
    assert any("pos_embed" in n for n in nwd)
    assert any("fusion_token" in n or "latent_tokens" in n for n in nwd)
    cfg = m.cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists become tuples again


@pytest.mark.parametrize("name", TINY + BASE)
def test_builds_and_counts_on_meta(name: str) -> None:
    with torch.device("meta"):
        m = create_model(name)
        x = m.example_inputs(1)
    counter = FlopCounterMode(display=False)
    with counter:
        out = m(x)
    assert out.logits.device.type == "meta" and counter.get_total_flops() > 0


def test_classes() -> None:
    assert isinstance(create_model("zorro_swin_tiny"), ZorroSwin)
    assert isinstance(create_model("zorro_hip_tiny"), ZorroHiP)


def test_bad_configs_fail_early() -> None:
    with pytest.raises(ValueError, match="fusion"):
        get_model_config("zorro_swin_tiny", fusion="all")
    with pytest.raises(ValueError, match="depths"):
        get_model_config("zorro_hip_tiny", depths=(2,))  # stage_dims / num_latents have two stages
    with pytest.raises(ValueError, match="not divisible"):
        create_model("zorro_swin_tiny", spec_window=(5, 4))
    assert get_model_config("zorro_swin_tiny", depths=(1, 3)).depth == 4
