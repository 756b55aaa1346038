"""Swin window geometry: partition round trip, and the shifted-window masks against Swin's own
construction (cyclic roll, then region ids from slices); Swin blocks read their routing from the rule."""

from __future__ import annotations

import itertools

import pytest
import torch

from avfusion.backbones.swin import SwinBlock, build_layout
from avfusion.layers.masks import RULES, TokenType, segments_of
from avfusion.layers.windows import clamp_window, stage_grids, window_ids, window_partition, window_reverse
from avfusion.models import get_model_config


@pytest.mark.parametrize("grid,window", [((12, 8), (4, 4)), ((4, 8, 8), (2, 4, 4)), ((16, 14, 14), (8, 7, 7))])
def test_partition_round_trip(grid, window) -> None:
    x = torch.randn(2, *grid, 3)
    w = window_partition(x, window)
    assert w.shape[1] == torch.Size(window).numel()
    torch.testing.assert_close(window_reverse(w, grid, window), x, atol=0, rtol=0)
    # The first window holds the grid's first corner block.
    corner = x[(0, *(slice(0, k) for k in window))].reshape(-1, 3)
    torch.testing.assert_close(w[0], corner, atol=0, rtol=0)


def _swin_region_mask(grid, window, shift) -> torch.Tensor:
    """Swin's reference: label regions on the un-rolled grid by slices, roll, partition, compare."""
    img = torch.zeros(1, *grid, 1)
    cnt = 0
    per_axis = [(slice(0, -w), slice(-w, -s), slice(-s, None)) if s else (slice(None),)
                for w, s in zip(window, shift)]
    for sl in itertools.product(*per_axis):
        img[(0, *sl)] = cnt
        cnt += 1
    win = window_partition(img, window)[..., 0]  # (nW, n)
    return win[:, :, None] == win[:, None, :]


@pytest.mark.parametrize("grid,window", [((12, 8), (4, 4)), ((4, 8, 8), (2, 4, 4)), ((8, 14, 14), (4, 7, 7))])
def test_shifted_mask_matches_swin(grid, window) -> None:
    win, shift = clamp_window(grid, window, shifted=True)
    ids = window_ids(grid, win, shift, None).view(1, *grid, 1)
    ids = window_partition(ids.roll([-s for s in shift], dims=tuple(range(1, len(grid) + 1))), win)[..., 0]
    ours = ids[:, :, None] == ids[:, None, :]
    # Swin labels regions on the rolled grid, which is what the fast path attends over.
    assert torch.equal(ours, _swin_region_mask(grid, win, shift))


def test_window_clamped_to_grid_is_not_shifted() -> None:
    assert clamp_window((4, 4, 4), (2, 7, 7), shifted=True) == ((2, 4, 4), (1, 0, 0))
    assert clamp_window((12, 4), (4, 4), shifted=False) == ((4, 4), (0, 0))


@pytest.mark.parametrize("shifted", [False, True])
def test_a_block_reads_only_its_window(shifted: bool) -> None:
    """Gradient of one audio token's output: nonzero exactly on the tokens of its window."""
    cfg = get_model_config("zorro_swin_tiny")
    grid, window = (8, 4), (4, 4)
    block = SwinBlock(16, 2, 32, shifted, cfg).eval()
    segments = segments_of([TokenType.AUDIO, TokenType.FUSION], [32, 2])
    layout = build_layout(segments, {TokenType.AUDIO: grid}, {TokenType.AUDIO: window}, 1, "auto", None,
                          rule=RULES["zorro"])
    x = torch.randn(1, 34, 16, requires_grad=True)
    block(x, layout)[0, 5].sum().backward()  # token 5 = (t=1, f=1)
    reads = (x.grad[0].abs().sum(-1) > 0).tolist()
    win, shift = clamp_window(grid, window, shifted)
    ids = window_ids(grid, win, shift, None).tolist()
    assert reads[:32] == [i == ids[5] for i in ids]  # own window, nothing else
    assert reads[32:] == [False, False]  # never the fusion tokens


A, V, F = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION


def _two_grid_layout(rule, impl):
    segments = segments_of([A, V, F], [32, 16, 3])
    grids, windows = {A: (8, 4), V: (1, 4, 4)}, {A: (4, 4), V: (1, 2, 2)}
    return build_layout(segments, grids, windows, 2, impl, None, rule=rule)


@pytest.mark.parametrize("shifted", [False, True])
def test_fusion_queries_read_what_the_rule_allows(shifted: bool) -> None:
    """The fast path takes the fusion queries' keys from the rule, not a hard-coded 'everything':
    with a rule where fusion tokens read only audio + fusion, a video change does not reach them,
    and the fast path still equals the dense reference (the same rule AND same window)."""
    rule = {A: frozenset({A}), V: frozenset({V}), F: frozenset({A, F})}
    block = SwinBlock(16, 2, 32, shifted, get_model_config("zorro_swin_tiny")).eval()
    x = torch.randn(2, 51, 16)
    with torch.no_grad():
        fast = block(x, _two_grid_layout(rule, "auto"))
        block.impl = "dense"
        dense = block(x, _two_grid_layout(rule, "dense"))
        x2 = x.clone()
        x2[:, 32:48] += 1.0  # the video tokens
        moved = block(x2, _two_grid_layout(rule, "dense"))
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved[:, 48:], dense[:, 48:], atol=0, rtol=0)  # fusion rows never read video
    assert (moved[:, 32:48] - dense[:, 32:48]).abs().max() > 1e-3


def test_a_rule_that_crosses_grids_is_refused() -> None:
    """Windows partition one modality's grid: a rule letting audio read video cannot be windowed."""
    with pytest.raises(ValueError, match="own grid"):
        _two_grid_layout(RULES["bottleneck_mask"], "auto")


def test_stage_grids_name_the_group_stage_and_window() -> None:
    assert stage_grids({"audio": (8, 4)}, {"audio": (4, 4)}, 2) == [{"audio": (8, 4)}, {"audio": (4, 2)}]
    with pytest.raises(ValueError, match=r"audio grid \(3, 1\) before stage 2 has an odd merged axis"):
        stage_grids({"audio": (6, 2)}, {"audio": (3, 1)}, 3)
    with pytest.raises(ValueError, match=r"video grid \(4, 8, 8\) at stage 0 is not divisible by its window"):
        stage_grids({"video": (4, 8, 8)}, {"video": (2, 3, 3)}, 1)
