"""FlexAttention path against the dense reference.

On CPU FlexAttention has a forward pass only (DESIGN.md section 2), so the forward is tested
here and the backward only under CUDA (skipped on machines without a GPU).
"""

import pytest
import torch

from avfusion.layers import Attention, CrossAttention, attend
from avfusion.layers.attention import ATTN_IMPLS
from avfusion.layers.masks import RULES, TokenMask, TokenType, flex_block_mask, segments_of, self_mask
from avfusion.models import build_model, get_model_config

pytest.importorskip("torch.nn.attention.flex_attention", reason="this torch has no FlexAttention")

A, V, F, Q = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION, TokenType.QUERY
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention backward needs CUDA")


def test_flex_is_a_valid_impl():
    assert "flex" in ATTN_IMPLS and "split" in ATTN_IMPLS
    assert get_model_config("zorro_vit_tiny", attn_impl="flex").attn_impl == "flex"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_flex_forward_matches_dense(rule):
    # Lengths that do not fill FlexAttention's 128-token tiles, and segments that straddle them.
    segs = segments_of([A, V, F], [70, 150, 9])
    mask = self_mask(segs, RULES[rule])
    q, k, v = (torch.randn(2, 3, 229, 16) for _ in range(3))
    dense = attend(q, k, v, mask, "dense")
    torch.testing.assert_close(attend(q, k, v, mask, "flex"), dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attend(q, k, v, mask, "split"), dense, rtol=1e-5, atol=1e-5)


def test_flex_cross_attention_matches_dense():
    q_segs = segments_of([A, V, Q], [1, 1, 1])
    k_segs = segments_of([A, V, F], [30, 50, 4])
    reads = {A: frozenset({A}), V: frozenset({V}), Q: frozenset({A, V, F})}
    mask = TokenMask(q_segs, k_segs, reads)
    xa = CrossAttention(32, 4, attn_impl="dense").eval()
    q, ctx = torch.randn(2, 3, 32), torch.randn(2, 84, 32)
    with torch.no_grad():  # CPU FlexAttention: forward only
        dense = xa(q, ctx, mask)
        xa.attn_impl = "flex"
        torch.testing.assert_close(xa(q, ctx, mask), dense, rtol=1e-5, atol=1e-5)


def test_block_mask_is_cached_per_layout_and_device():
    segs = segments_of([A, V, F], [20, 30, 2])
    m1, m2 = self_mask(segs, RULES["zorro"]), self_mask(segs, RULES["zorro"])
    assert m1 is not m2 and m1.key == m2.key
    assert flex_block_mask(m1, "cpu") is flex_block_mask(m2, "cpu")  # same layout: built once
    other = self_mask(segs, RULES["bottleneck_mask"])
    assert flex_block_mask(other, "cpu") is not flex_block_mask(m1, "cpu")


@pytest.mark.parametrize("name", ["zorro_vit_tiny", "zorro_vit_tiny_bottleneck_mask"])
def test_model_forward_flex_matches_dense(name, randomize):
    torch.manual_seed(0)
    model = randomize(build_model(get_model_config(name, attn_impl="dense")).eval(), std=0.05)
    x = model.example_inputs(2)
    with torch.no_grad():
        ref = model(x)
        for m in model.modules():
            if hasattr(m, "attn_impl"):
                m.attn_impl = "flex"
        out = model(x)
    for o in ref.outputs:
        torch.testing.assert_close(out.outputs[o], ref.outputs[o], rtol=1e-4, atol=1e-4)


def test_auto_uses_split_path_on_cpu(monkeypatch):
    # On CPU 'auto' must not take the flex path (it has no backward there).
    import avfusion.layers.attention as attn_mod

    def boom(*a, **k):
        raise AssertionError("flex path taken on CPU")

    monkeypatch.setattr(attn_mod, "_flex_attend", boom)
    segs = segments_of([A, V, F], [6, 10, 2])
    attn = Attention(32, 4, attn_impl="auto")
    x = torch.randn(2, 18, 32, requires_grad=True)
    attn(x, self_mask(segs, RULES["zorro"])).sum().backward()
    assert x.grad is not None


@cuda
@pytest.mark.parametrize("impl", ["flex", "auto"])
def test_flex_forward_and_backward_match_dense_on_cuda(impl):
    segs = segments_of([A, V, F], [200, 300, 8])
    mask = self_mask(segs, RULES["zorro"])
    attn = Attention(128, 2).cuda()
    x = torch.randn(2, 508, 128, device="cuda", requires_grad=True)
    outs, grads = {}, {}
    for name in ("dense", impl):
        attn.attn_impl = name
        x.grad = None
        attn.zero_grad()
        y = attn(x, mask)
        y.square().sum().backward()
        outs[name], grads[name] = y.detach(), (x.grad.clone(), attn.qkv.weight.grad.clone())
    torch.testing.assert_close(outs[impl], outs["dense"], rtol=1e-3, atol=1e-3)
    for g, g_ref in zip(grads[impl], grads["dense"]):
        torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-3)
