import pytest
import torch
import torch.nn.functional as F

from avfusion.train.losses import aggregation_for, classification_loss, combine
from avfusion.train.optim import lr_factor


def test_single_label_matches_torch_cross_entropy_with_smoothing():
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    for eps in (0.0, 0.3):
        ours = classification_loss(logits, y, "single", eps)
        torch.testing.assert_close(ours, F.cross_entropy(logits, y, label_smoothing=eps))


def test_multilabel_is_bce_summed_over_classes_with_scenic_smoothing():
    logits, y = torch.randn(4, 3), torch.tensor([[1., 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]])
    ours = classification_loss(logits, y, "multilabel", 0.3)
    target = y * 0.7 + 0.3 / 3
    expected = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / 4
    torch.testing.assert_close(ours, expected)


def test_multihead_is_mean_of_per_head_cross_entropy():
    logits = torch.randn(5, 7)
    y = torch.stack([torch.randint(0, 3, (5,)), torch.randint(0, 4, (5,))], dim=1)
    ours = classification_loss(logits, y, "multihead", 0.0, {"verb": 3, "noun": 4})
    expected = (F.cross_entropy(logits[:, :3], y[:, 0]) + F.cross_entropy(logits[:, 3:], y[:, 1])) / 2
    torch.testing.assert_close(ours, expected)


def test_soft_targets_from_mixup_equal_mixed_losses():
    logits = torch.randn(4, 5)
    a, b = torch.randint(0, 5, (4,)), torch.randint(0, 5, (4,))
    soft = 0.7 * F.one_hot(a, 5).float() + 0.3 * F.one_hot(b, 5).float()
    expected = 0.7 * F.cross_entropy(logits, a) + 0.3 * F.cross_entropy(logits, b)
    torch.testing.assert_close(classification_loss(logits, soft, "single"), expected)


def test_aggregation_rules():
    assert aggregation_for("streams", "auto") == "mean" and aggregation_for("masked", "auto") == "sum"
    losses = {"audio": torch.tensor(1.0), "video": torch.tensor(3.0)}
    assert combine(losses, "mean").item() == 2.0 and combine(losses, "sum").item() == 4.0
    assert combine(losses, "sum", {"audio": 0.5}).item() == 3.5


def test_warmup_cosine_schedule():
    f = [lr_factor(s, 100, 10, "cosine", 0.0) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5, abs=1e-6)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)


def test_task_with_multihead_dict_labels():
    """EPIC-style batches: labels {verb, noun} become (B, 2) in the model's class-split order."""
    import avfusion
    from avfusion.train.task import Task

    model = avfusion.create_model("mbt_tiny", num_classes=7, class_splits={"verb": 3, "noun": 4}, task="multihead")
    task = Task(model, "supervised", "multihead")
    x = model.example_inputs(4)
    labels = {"noun": torch.tensor([0, 3, 2, 1]), "verb": torch.tensor([2, 0, 1, 1])}
    losses = task({**x, "label": labels})
    out = model(x)
    y = torch.stack([labels["verb"], labels["noun"]], dim=1)
    expected = sum(classification_loss(out.outputs[m], y, "multihead", 0.0, {"verb": 3, "noun": 4})
                   for m in ("audio", "video")) / 2
    torch.testing.assert_close(losses["loss"], expected)
    with pytest.raises(ValueError, match="lack head"):
        task({**x, "label": {"verb": labels["verb"]}})
