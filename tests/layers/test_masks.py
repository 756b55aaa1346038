import pytest
import torch

from avfusion.layers.masks import RULES, TokenMask, TokenType, segments_of, self_mask

A, V, F, Q = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION, TokenType.QUERY


def layout(na=3, nv=4, nf=2):
    return segments_of([A, V, F], [na, nv, nf])


def test_zorro_mask_blocks():
    m = self_mask(layout(), RULES["zorro"]).dense()
    assert m.shape == (9, 9)
    a, v, f = slice(0, 3), slice(3, 7), slice(7, 9)
    assert m[a, a].all() and not m[a, v].any() and not m[a, f].any()
    assert m[v, v].all() and not m[v, a].any() and not m[v, f].any()
    assert m[f].all()  # fusion tokens read everything


def test_bottleneck_mask_blocks():
    m = self_mask(layout(), RULES["bottleneck_mask"]).dense()
    a, v, f = slice(0, 3), slice(3, 7), slice(7, 9)
    assert m[a, a].all() and m[a, f].all() and not m[a, v].any()
    assert m[v, v].all() and m[v, f].all() and not m[v, a].any()
    assert m[f].all()


def test_all_rule_is_full_and_unimodal_is_block_diagonal():
    assert self_mask(layout(), RULES["all"]).is_full
    m = self_mask(layout(), RULES["unimodal"]).dense()
    assert torch.equal(m, torch.block_diag(torch.ones(3, 3), torch.ones(4, 4), torch.ones(2, 2)).bool())


def test_missing_modality_layout_drops_segment():
    segs = segments_of([A, V, F], [3, 0, 2])
    assert [s.type for s in segs] == [A, F]
    m = self_mask(segs, RULES["zorro"]).dense()
    assert m.shape == (5, 5) and not m[:3, 3:].any() and m[3:].all()


def test_no_query_row_without_keys_is_asserted():
    # Audio queries over a layout with only video keys: every audio row would be empty.
    q = segments_of([A], [2])
    k = segments_of([V, F], [3, 1])
    with pytest.raises(ValueError, match="audio queries without any allowed key"):
        TokenMask(q, k, RULES["zorro"])


def test_every_rule_leaves_no_empty_row():
    for name, rule in RULES.items():
        m = self_mask(layout(), rule).dense()
        assert m.any(dim=-1).all(), name


def test_noncontiguous_keys_are_grouped_into_one_block():
    mask = self_mask(layout(), RULES["bottleneck_mask"])
    audio_block = mask.blocks[0]
    assert audio_block.q == slice(0, 3)
    assert audio_block.k == (slice(0, 3), slice(7, 9))  # own tokens + fusion tokens
    fusion_block = mask.blocks[2]
    assert fusion_block.k == (slice(0, 9),)  # adjacent ranges merged into one slice
