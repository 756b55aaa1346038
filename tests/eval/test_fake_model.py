"""End to end on a fake model: views -> model -> per-video averaging -> metrics per output.

The fake model's outputs for every view are a per-video score plus large view noise that sums
to exactly zero over each video's 2 clips x 3 crops (all numbers are dyadic, so float sums are
exact). Only a correct multi-view average recovers the per-video scores, whose metrics are
known in closed form:

multi-label, 6 videos, 4 classes with 1, 2, 3 and 0 positives:
  - "audio"  ranks every positive first                  -> mAP 1, AUC 1, d' = +inf
  - "video"  ranks every positive last (no ties)         -> AP = (1/P) sum_j j / (N - P + j):
             1/6, (1/5 + 2/6) / 2 = 4/15, (1/4 + 2/5 + 3/6) / 3 = 23/60 -> mAP 49/180, AUC 0
  - "fusion" (= logits) scores every video alike (tied)  -> AP = P / N: mAP (1/6+2/6+3/6)/3 = 1/3,
             AUC 1/2, d' = 0
  - class 3 has no positive: excluded from every mean.
single-label, 5 videos, 3 classes, labels (0, 1, 2, 0, 1):
  - "audio" always right -> top1 1; "video" always wrong -> top1 0 (top5, clipped to 3, is 1);
  - "fusion" right for videos 0, 1, 2 only -> top1 3/5, mean class accuracy (1/2 + 1/2 + 1) / 3.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avfusion.eval import average_views, classification_report, report_per_output
from avfusion.core.base import ModelOutput

CLIPS, CROPS = 2, 3
VIEWS = CLIPS * CROPS
VIEW_NOISE = torch.tensor([2.0, -2.0, 1.0, -1.0, 0.5, -0.5]) * 4  # sums to 0 over a video's views


class FakeModel(nn.Module):
    """Scores a view from the (video, view) numbers it finds in ``inputs["audio"][:, 0, :2]``.

    per_video: output name -> (N_videos, C) the score each video should get after averaging.
    """

    def __init__(self, per_video: dict[str, torch.Tensor]):
        super().__init__()
        self.per_video = per_video

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        video = inputs["audio"][:, 0, 0].long()  # (B,)
        view = inputs["audio"][:, 0, 1].long()  # (B,)
        num_classes = next(iter(self.per_video.values())).shape[1]
        sign = torch.tensor([(-1.0) ** c for c in range(num_classes)])  # (C,)
        # (B, C): differs per view, class and video; cancels exactly over a video's views.
        noise = VIEW_NOISE[view, None] * sign[None, :] * (1 + video[:, None] % 2)
        outputs = {name: s[video] + noise for name, s in self.per_video.items()}
        return ModelOutput(logits=outputs["fusion"], outputs=outputs)


def run_eval(model: nn.Module, num_videos: int, batch_size: int = 4, padding: int = 3,
             drop_duplicates: bool = True) -> dict[str, object]:
    """The evaluation protocol: shuffled views, padded batches, per-output averaging."""
    views = [(v, k) for v in range(num_videos) for k in range(VIEWS)]
    order = torch.randperm(len(views), generator=torch.Generator().manual_seed(0)).tolist()
    order += order[:padding]  # a distributed sampler repeats views to fill the last batch
    collected: dict[str, list[torch.Tensor]] = {}
    ids, view_index = [], []
    for i in range(0, len(order), batch_size):
        batch = [views[j] for j in order[i:i + batch_size]]
        audio = torch.zeros(len(batch), 4, 8)  # (B, T_a, F), carrying (video, view) in row 0
        audio[:, 0, :2] = torch.tensor(batch, dtype=torch.float32)
        out = model({"audio": audio})
        for name, s in {"logits": out.logits, **out.outputs}.items():
            collected.setdefault(name, []).append(s)
        ids += [f"video{v}" for v, _ in batch]
        view_index += [k for _, k in batch]
    per_video = {}
    for name, chunks in collected.items():
        agg = average_views(torch.cat(chunks), ids, view_index if drop_duplicates else None)
        assert agg.ids == [f"video{v}" for v in range(num_videos)]
        per_video[name] = agg.scores
    return per_video


MULTI_HOT = torch.tensor([
    [1, 1, 1, 0],
    [0, 1, 1, 0],
    [0, 0, 1, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
], dtype=torch.float32)
RANK = torch.arange(6, dtype=torch.float32)[:, None] / 16  # breaks ties between videos, < 1


def multilabel_model() -> FakeModel:
    signed = 2 * MULTI_HOT - 1
    return FakeModel({
        "audio": signed + RANK,  # positives at 1 + r, negatives at -1 + r: every positive first
        "video": -signed + RANK,  # every positive last, no ties
        "fusion": torch.zeros(6, 4),  # every video alike
    })


def test_fake_model_multilabel_exact_metrics():
    per_video = run_eval(multilabel_model(), num_videos=6)
    r = report_per_output("multilabel", per_video, MULTI_HOT)
    assert set(r) == {"logits", "audio", "video", "fusion"}
    for out in r.values():
        assert out["classes_without_positives"] == [3] and out["num_classes_evaluated"] == 3
        assert math.isnan(out["per_class_ap"][3])

    assert r["audio"]["mAP"] == 1.0 and r["audio"]["AUC"] == 1.0 and r["audio"]["d_prime"] == math.inf
    assert r["video"]["per_class_ap"][:3] == pytest.approx([1 / 6, 4 / 15, 23 / 60], abs=1e-12)
    assert r["video"]["mAP"] == pytest.approx(49 / 180, abs=1e-12)
    assert r["video"]["AUC"] == 0.0 and r["video"]["d_prime"] == -math.inf
    for name in ("fusion", "logits"):
        assert r[name]["per_class_ap"][:3] == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=1e-12)
        assert r[name]["mAP"] == pytest.approx(1 / 3, abs=1e-12)
        assert r[name]["AUC"] == 0.5 and r[name]["d_prime"] == 0.0


def test_fake_model_counting_padding_duplicates_would_change_the_result():
    # The same run with duplicates kept: the view noise no longer cancels, the ties break.
    per_video = run_eval(multilabel_model(), num_videos=6, drop_duplicates=False)
    r = classification_report("multilabel", per_video["fusion"], MULTI_HOT)
    assert r["mAP"] != pytest.approx(1 / 3, abs=1e-6)


LABELS = torch.tensor([0, 1, 2, 0, 1])


def test_fake_model_single_label_exact_metrics():
    one_hot = torch.nn.functional.one_hot(LABELS, 3).float()
    wrong = torch.nn.functional.one_hot((LABELS + 1) % 3, 3).float()
    half = torch.cat([one_hot[:3], wrong[3:]])  # right for videos 0, 1, 2
    model = FakeModel({"audio": one_hot, "video": wrong, "fusion": half})
    r = report_per_output("single", run_eval(model, num_videos=5), LABELS)
    assert r["audio"] == {"top1": 1.0, "top5": 1.0, "mean_class_accuracy": 1.0, "num_samples": 5}
    assert r["video"] == {"top1": 0.0, "top5": 1.0, "mean_class_accuracy": 0.0, "num_samples": 5}
    assert r["fusion"]["top1"] == pytest.approx(3 / 5, abs=1e-12)
    assert r["fusion"]["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3, abs=1e-12)
    assert r["logits"] == r["fusion"]
