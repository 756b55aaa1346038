import pytest
import torch

from avfusion.layers import Attention, CrossAttention, attend
from avfusion.layers.masks import RULES, TokenMask, TokenType, segments_of, self_mask

A, V, F, Q = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION, TokenType.QUERY


def reference_attention(q, k, v, mask):
    """Explicit softmax(q k^T / sqrt(d)) v with -inf on disallowed keys: independent of SDPA."""
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


@pytest.mark.parametrize("rule", sorted(RULES))
def test_dense_and_split_paths_match_reference(rule):
    segs = segments_of([A, V, F], [5, 7, 3])
    mask = self_mask(segs, RULES[rule])
    q, k, v = (torch.randn(2, 4, 15, 8, dtype=torch.float64) for _ in range(3))
    ref = reference_attention(q, k, v, mask.dense())
    for impl in ("dense", "auto"):
        out = attend(q, k, v, mask, impl)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_attention_module_paths_agree_forward_and_backward():
    segs = segments_of([A, V, F], [6, 10, 2])
    mask = self_mask(segs, RULES["zorro"])
    attn = Attention(32, 4)
    x = torch.randn(3, 18, 32, requires_grad=True)
    outs, grads = {}, {}
    for impl in ("dense", "auto"):
        attn.attn_impl = impl
        x.grad = None
        attn.zero_grad()
        y = attn(x, mask)
        y.square().sum().backward()
        outs[impl], grads[impl] = y.detach(), (x.grad.clone(), attn.qkv.weight.grad.clone())
    torch.testing.assert_close(outs["auto"], outs["dense"], rtol=1e-5, atol=1e-5)
    for g_auto, g_dense in zip(grads["auto"], grads["dense"]):
        torch.testing.assert_close(g_auto, g_dense, rtol=1e-4, atol=1e-5)


def test_masked_tokens_do_not_influence_queries():
    segs = segments_of([A, V, F], [4, 4, 2])
    mask = self_mask(segs, RULES["zorro"])
    attn = Attention(16, 2, attn_impl="dense").eval()
    x = torch.randn(1, 10, 16)
    x2 = x.clone()
    x2[:, 4:8] += torch.randn(1, 4, 16)  # change only the video tokens
    y, y2 = attn(x, mask), attn(x2, mask)
    torch.testing.assert_close(y[:, :4], y2[:, :4], rtol=0, atol=1e-6)  # audio rows unchanged
    assert not torch.allclose(y[:, 8:], y2[:, 8:])  # fusion rows do see video


def test_cross_attention_with_query_mask():
    q_segs = segments_of([A, V, Q], [1, 1, 1])
    k_segs = segments_of([A, V], [3, 5])
    reads = {A: frozenset({A}), V: frozenset({V}), Q: frozenset({A, V})}
    mask = TokenMask(q_segs, k_segs, reads)
    xa = CrossAttention(16, 2)
    q, ctx = torch.randn(2, 3, 16), torch.randn(2, 8, 16)
    xa.attn_impl = "dense"
    dense = xa(q, ctx, mask)
    xa.attn_impl = "auto"
    torch.testing.assert_close(xa(q, ctx, mask), dense, rtol=1e-5, atol=1e-6)


def test_bad_attn_impl_is_refused():
    with pytest.raises(ValueError, match="attn_impl"):
        Attention(16, 2, attn_impl="flash")


# -- attention maps: the reference path with explicit probabilities -------------------------
@pytest.mark.parametrize("impl", ["auto", "dense"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_kept_probabilities_are_the_masked_softmax(rule, impl):
    from avfusion.layers import keep_attention

    segs = segments_of([A, V, F], [5, 7, 3])
    mask = self_mask(segs, RULES[rule])
    attn = Attention(16, 2, attn_impl=impl).eval()
    x = torch.randn(2, 15, 16)
    with torch.no_grad():
        plain = attn(x, mask)
        with keep_attention(attn):
            kept_out = attn(x, mask)
        # By hand: q, k from the fused projection, -inf on disallowed keys, softmax.
        q, k, _ = attn.qkv(x).reshape(2, 15, 3, 2, 8).permute(2, 0, 3, 1, 4)
        allowed = mask.dense()
        s = (q @ k.transpose(-2, -1) / 8 ** 0.5).masked_fill(~allowed, float("-inf"))
    (probs,) = attn.kept
    assert probs.shape == (2, 2, 15, 15) and not attn.keep  # back on its configured path
    torch.testing.assert_close(probs, s.softmax(-1), rtol=1e-6, atol=1e-6)
    assert (probs[..., ~allowed] == 0).all()  # exactly zero on masked keys
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 15))  # rows sum to 1 over allowed keys
    torch.testing.assert_close(kept_out, plain, rtol=1e-5, atol=1e-6)  # same output as the fast path


def test_cross_attention_keeps_its_probabilities_and_others_are_refused():
    from avfusion.layers import keep_attention

    mask = TokenMask(segments_of([A, Q], [1, 1]), segments_of([A, V], [3, 5]),
                     {A: frozenset({A}), Q: frozenset({A, V})})
    xa = CrossAttention(16, 2).eval()
    q, ctx = torch.randn(1, 2, 16), torch.randn(1, 8, 16)
    with torch.no_grad(), keep_attention(xa):
        xa(q, ctx, mask)
        xa(q, ctx, None)  # every call is kept
    masked, full = xa.kept
    assert (masked[0, :, 0, 3:] == 0).all() and (masked[0, :, 0, :3] > 0).all()  # the audio query reads audio only
    assert (full > 0).all()
    with pytest.raises(TypeError, match="cannot keep"):
        with keep_attention(torch.nn.Linear(2, 2)):
            pass
