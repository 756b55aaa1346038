"""Multi-view averaging: shuffled views, padding duplicates, targets, averaging modes."""

from __future__ import annotations

import pytest
import torch

from avfusion.eval import average_views, classification_report


def _views(num_videos: int = 3, clips: int = 2, crops: int = 3, classes: int = 4):
    """Per-view logits (V, C), clip ids, view indices and targets, in video-major order."""
    g = torch.Generator().manual_seed(0)
    v = num_videos * clips * crops
    scores = torch.randn(v, classes, generator=g)
    ids = [f"vid{i // (clips * crops)}" for i in range(v)]
    view_index = torch.arange(v) % (clips * crops)
    targets = torch.tensor([i // (clips * crops) % classes for i in range(v)])
    return scores, ids, view_index, targets


def test_mean_per_video_in_sorted_id_order():
    scores, ids, vi, targets = _views()
    out = average_views(scores, ids, vi, targets=targets)
    assert out.ids == ["vid0", "vid1", "vid2"]
    assert out.num_views.tolist() == [6, 6, 6]
    expected = scores.double().view(3, 6, 4).mean(dim=1)
    torch.testing.assert_close(out.scores, expected, rtol=0, atol=1e-12)
    assert out.targets.tolist() == [0, 1, 2]
    assert out.scores.dtype == torch.float64


def test_shuffled_views_with_padding_duplicates_give_the_same_result():
    scores, ids, vi, targets = _views()
    reference = average_views(scores, ids, vi, targets=targets)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))
    # A distributed sampler pads with repeats of the first views; a repeat may even differ a
    # little (another batch composition on GPU): only the first occurrence may count.
    pad = torch.tensor([perm[0].item(), perm[1].item(), perm[0].item()])
    rows = torch.cat([perm, pad])
    noisy = scores[rows].clone()
    noisy[len(perm):] += 100.0  # duplicates that would visibly move the mean if counted
    out = average_views(noisy, [ids[r] for r in rows], vi[rows], targets=targets[rows], num_views=6)
    assert out.ids == reference.ids
    assert out.num_views.tolist() == [6, 6, 6]
    torch.testing.assert_close(out.scores, reference.scores, rtol=0, atol=1e-12)
    assert torch.equal(out.targets, reference.targets)


def test_without_view_index_every_row_counts():
    scores = torch.tensor([[1.0, 0.0], [3.0, 2.0], [3.0, 2.0]])
    out = average_views(scores, ["a", "a", "a"])
    torch.testing.assert_close(out.scores, torch.tensor([[7 / 3, 4 / 3]], dtype=torch.float64))
    out = average_views(scores, ["a", "a", "a"], [0, 1, 1])  # the third row is a duplicate
    torch.testing.assert_close(out.scores, torch.tensor([[2.0, 1.0]], dtype=torch.float64))


def test_integer_ids_sort_numerically():
    out = average_views(torch.eye(3), [10, 2, 1], [0, 0, 0])
    assert out.ids == [1, 2, 10]
    assert out.scores.argmax(dim=1).tolist() == [2, 1, 0]


def test_softmax_mode_is_per_head_and_sigmoid_mode_averages_probabilities():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0, 0.5], [1.0, 0.0, 0.0, 3.0, 0.0]])
    out = average_views(logits, ["x", "x"], [0, 1], mode="softmax", class_splits={"verb": 2, "noun": 3})
    per_head = torch.cat([logits[:, :2].softmax(1), logits[:, 2:].softmax(1)], dim=1)  # (2, 5)
    expected = per_head.double().mean(0, keepdim=True)
    torch.testing.assert_close(out.scores, expected)
    torch.testing.assert_close(out.scores[:, :2].sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(out.scores[:, 2:].sum(), torch.tensor(1.0, dtype=torch.float64))
    out = average_views(logits, ["x", "x"], [0, 1], mode="sigmoid")
    torch.testing.assert_close(out.scores, logits.double().sigmoid().mean(0, keepdim=True))
    # Averaging logits and averaging probabilities rank classes differently here:
    # one confident view for class 1 and two mild ones for class 0. Mean logits: (0, 2/3), class 1;
    # mean probabilities: p1 = (1.00 + 0.02 + 0.02) / 3 = 0.35, class 0.
    three = torch.tensor([[0.0, 10.0], [0.0, -4.0], [0.0, -4.0]])
    assert average_views(three, ["x"] * 3, [0, 1, 2]).scores.argmax().item() == 1
    assert average_views(three, ["x"] * 3, [0, 1, 2], mode="softmax").scores.argmax().item() == 0


def test_errors_name_the_problem():
    scores, ids, vi, targets = _views()
    with pytest.raises(ValueError, match="expected 6"):
        average_views(scores[:-1], ids[:-1], vi[:-1], num_views=6)
    bad = targets.clone()
    bad[1] = 3
    with pytest.raises(ValueError, match="vid0.*different targets"):
        average_views(scores, ids, vi, targets=bad)
    with pytest.raises(ValueError, match="clip ids"):
        average_views(scores, ids[:-1])
    with pytest.raises(ValueError, match="mode"):
        average_views(scores, ids, mode="mean")


def test_multihead_probability_average_feeds_the_epic_report():
    # Two views per segment whose logits differ by a per-head constant have the same softmax, so
    # the per-head probability average is exactly that softmax, and the report on it (as
    # probabilities) must equal the report on one view's logits.
    g = torch.Generator().manual_seed(2)
    splits = {"verb": 3, "noun": 4}
    logits = torch.randn(6, 7, generator=g, dtype=torch.float64)
    targets = {"verb": torch.randint(0, 3, (6,), generator=g), "noun": torch.randint(0, 4, (6,), generator=g)}
    shifted = logits + torch.tensor([5.0] * 3 + [-2.0] * 4, dtype=torch.float64)
    ids = [f"seg{i}" for i in range(6)] * 2
    agg = average_views(torch.cat([shifted, logits]), ids, [0] * 6 + [1] * 6, mode="softmax", class_splits=splits)
    probs = torch.cat([logits[:, :3].softmax(1), logits[:, 3:].softmax(1)], dim=1)
    torch.testing.assert_close(agg.scores, probs)
    from_probs = classification_report("multihead", agg.scores, targets, splits, score_type="probs")
    assert from_probs == classification_report("multihead", logits, targets, splits)
    # Treating the averaged probabilities as logits would softmax them twice: a different joint.
    twice = torch.cat([agg.scores[:, :3].softmax(1), agg.scores[:, 3:].softmax(1)], dim=1)
    assert not torch.allclose(twice, probs)
