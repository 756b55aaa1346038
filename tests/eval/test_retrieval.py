"""Cross-modal retrieval (eval/retrieval.py, `avfusion eval --retrieval`): ranks and recalls exact on
embeddings with known ranks (ties counted against the query), the same through the evaluation data
path with a fake model, the projectors kept by pretraining, and a tiny Zorro pretrained for a few
dozen steps on generated clips that retrieves far better than chance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from avfusion.cli import main
from avfusion.eval.evaluate import evaluate_source
from avfusion.eval.retrieval import (
    PROJECTORS_CONFIG,
    PROJECTORS_WEIGHTS,
    Retrieval,
    chance,
    load_projectors,
    retrieval_metrics,
    retrieval_ranks,
    save_projectors,
)
from avfusion.errors import InputError
from avfusion.heads.projector import ContrastiveHead
from avfusion.core.base import ModelOutput
from avfusion.models.registry import get_model_config

from helpers.avclips import COLOURS, make_dataset

N = 12


def _scores_with_ranks(ranks: list[int], ties: list[int]) -> torch.Tensor:
    """(N, N) audio embeddings against video = identity: row i scores its answer 1, ``ranks[i] - 1``
    other candidates 2 (above it) and ``ties[i]`` others 1 (tied with it), the rest 0."""
    s = torch.zeros(N, N)
    for i, (r, t) in enumerate(zip(ranks, ties)):
        others = [j for j in range(N) if j != i]
        s[i, i] = 1.0
        s[i, others[: r - 1]] = 2.0
        s[i, others[r - 1: r - 1 + t]] = 1.0
    return s


def test_ranks_and_recalls_are_exact_with_ties_counted_against_the_query():
    above = [0, 0, 1, 2, 4, 4, 5, 9, 10, 11, 0, 1]  # candidates strictly more similar than the answer
    ties = [0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]  # candidates exactly as similar
    audio = _scores_with_ranks([a + 1 for a in above], ties)
    video = torch.eye(N)
    want = torch.tensor([a + t + 1 for a, t in zip(above, ties)])  # [1, 3, 2, 3, 5, 6, 6, 10, 11, 12, 2, 2]
    assert torch.equal(retrieval_ranks(audio, video), want)
    m = retrieval_metrics(audio, video)
    a2v = m["audio->video"]
    assert a2v["R@1"] == pytest.approx(1 / 12)  # only query 0: query 1's two ties push it to rank 3
    assert a2v["R@5"] == pytest.approx(7 / 12)
    assert a2v["R@10"] == pytest.approx(10 / 12)
    assert a2v["median_rank"] == pytest.approx(4.0)  # sorted ranks: ... 3, 5 ... -> (3 + 5) / 2
    assert a2v["mean_rank"] == pytest.approx(sum(want.tolist()) / 12)
    assert m["num_videos"] == 12 and m["chance"] == chance(12)
    assert m["chance"]["R@1"] == pytest.approx(1 / 12) and m["chance"]["median_rank"] == 6.5
    # video -> audio ranks the other way: checked against a plain double loop
    sim = torch.nn.functional.normalize(audio.double(), dim=1) @ torch.nn.functional.normalize(video.double(), dim=1).T
    loop = [sum(1 for i in range(N) if sim[i, j] >= sim[j, j]) for j in range(N)]
    assert retrieval_ranks(video, audio).tolist() == loop


def test_perfect_collapsed_and_random_embeddings():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 16, generator=g)
    perfect = retrieval_metrics(x, x * 3)  # cosine ignores scale
    assert perfect["audio->video"]["R@1"] == 1.0 and perfect["video->audio"]["median_rank"] == 1.0
    same = torch.ones(N, 16)  # every embedding the same: every answer ties with all -> ranked last
    collapsed = retrieval_metrics(same, same)
    assert collapsed["audio->video"] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "median_rank": 12.0, "mean_rank": 12.0}
    rnd = retrieval_metrics(torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g))
    assert abs(rnd["audio->video"]["median_rank"] - 200.5) < 40  # near chance
    with pytest.raises(InputError, match="at least 2 videos"):
        retrieval_metrics(x[:1], x[:1])


# -- through the evaluation data path -------------------------------------------------------------


class ClassCodeModel(nn.Module):
    """Features that are exactly a clip's class code: video by its colour, audio by which of the four
    tone bands holds the most energy (each clip is a tone of 300 + 200 c Hz). No logits to speak of."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = get_model_config("zorro_vit_tiny", num_classes=4, task="single")
        self.num_features = 4
        self.dummy = nn.Parameter(torch.zeros(1))
        self.bands: list[int] | None = None  # the mel bin of each class's tone, set by the test

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = {}
        if "video" in inputs:
            rgb = (inputs["video"].mean((2, 3, 4)) + 1) * 127.5  # (B, 3)
            cls = torch.cdist(rgb, torch.tensor(COLOURS, dtype=torch.float32)).argmin(1)
            feats["video"] = nn.functional.one_hot(cls, 4).float()
        if "audio" in inputs:
            cls = inputs["audio"].mean(1)[:, self.bands].argmax(1)  # (B,)
            feats["audio"] = nn.functional.one_hot(cls, 4).float()
        b = next(iter(feats.values())).shape[0]
        zeros = torch.zeros(b, 4)
        return ModelOutput(logits=zeros, outputs={k: zeros for k in feats}, features=feats)


def test_retrieval_through_evaluate_source_with_a_fake_model(tmp_path):
    manifest = make_dataset(tmp_path / "clips", 2)  # 4 classes x 2 clips
    model = ClassCodeModel()
    model.bands = _tone_bins(model, manifest)
    report = evaluate_source(model, manifest, eval_clips=2, eval_crops=1, retrieval=Retrieval(None))
    assert report["task"] is None and report["class_names"] is None
    r = report["retrieval"]
    assert r["space"] == "raw features" and "not trained to share a space" in r["note"]
    assert r["num_videos"] == 8 and r["skipped"] == 0
    # Each answer ties exactly with the other clip of its class (the same one-hot): rank 2 for all.
    for d in ("audio->video", "video->audio"):
        assert r[d] == {"R@1": 0.0, "R@5": 1.0, "R@10": 1.0, "median_rank": 2.0, "mean_rank": 2.0}
    json.dumps(report, allow_nan=False)


def _tone_bins(model: nn.Module, manifest: Path) -> list[int]:
    from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment

    cfg = ClipConfig.from_model(model.cfg, eval_clips=1, eval_crops=1)
    proc = ClipProcessor(cfg, train=False)
    files = sorted(manifest.parent.glob("clip_*_0.mp4"))
    return [int(proc(FileSegment(str(f), None, None, cfg))["audio"][0].mean(0).argmax()) for f in files]


def test_projectors_round_trip_and_refuse_another_model(tmp_path):
    head = ContrastiveHead(64, [["audio", "video"], ["audio", "fusion"]], out_dim=16, hidden=32)
    spec = {"dim": 64, "out_dim": 16, "hidden": 32, "temperature": 0.08, "pairs": head.pairs}
    save_projectors(tmp_path, head, spec)
    assert (tmp_path / PROJECTORS_WEIGHTS).is_file()
    assert json.loads((tmp_path / PROJECTORS_CONFIG).read_text())["outputs"] == ["audio", "fusion", "video"]
    loaded = load_projectors(tmp_path, 64)
    x = torch.randn(5, 64)
    for name in ("audio", "video", "fusion"):
        assert torch.allclose(loaded[name](x), head.proj[name](x))
    assert load_projectors(tmp_path / "elsewhere", 64) is None
    with pytest.raises(InputError, match="another model"):
        load_projectors(tmp_path, 128)


# -- a tiny Zorro, pretrained ---------------------------------------------------------------------


def test_pretrained_tiny_zorro_retrieves_far_better_than_chance(tmp_path, capsys):
    manifest = make_dataset(tmp_path / "clips", 3)  # 4 classes x 3 clips: at best, 3 candidates per class
    pre = tmp_path / "pre"
    rc = main(["pretrain", "--model", "zorro_vit_tiny", "--train", str(manifest), "--out", str(pre),
               "--max-steps", "30", "--batch-size", "8", "--workers", "0", "run.progress=false", "optim.name=adamw",
               "optim.lr=0.002", "schedule.warmup_steps=3", "contrastive.proj_hidden=0", "contrastive.proj_dim=32"])
    assert rc == 0
    assert (pre / PROJECTORS_WEIGHTS).is_file() and (pre / "model.safetensors").is_file()
    capsys.readouterr()
    rc = main(["eval", "--model", str(pre), "--data", str(manifest), "--retrieval", "--clips", "1", "--crops", "1",
               "--json", "--out", str(tmp_path / "ev")])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)["retrieval"]
    assert r["space"] == "projected" and r["num_videos"] == 12
    assert r["chance"]["median_rank"] == 6.5 and r["chance"]["R@5"] == pytest.approx(5 / 12)
    for d in ("audio->video", "video->audio"):
        assert r[d]["median_rank"] <= 3.5, r  # chance: 6.5
        assert r[d]["R@5"] >= 0.75, r  # chance: 0.42
    # the same model without its projectors: ranked on raw features, and the report says so
    raw = tmp_path / "raw"
    shutil.copytree(pre, raw, ignore=shutil.ignore_patterns("projectors.*", "checkpoints"))
    assert main(["eval", "--model", str(raw), "--data", str(manifest), "--retrieval", "--clips", "1", "--crops", "1",
                 "--out", str(tmp_path / "ev2")]) == 0
    out = capsys.readouterr().out
    assert "audio->video" in out and "retrieval on raw features" in out


def test_retrieval_needs_two_modalities(tmp_path, capsys):
    from avfusion.models.pretrained import save_pretrained
    from avfusion.models.registry import create_model

    d = save_pretrained(create_model("mbt_tiny_audio"), tmp_path / "a")
    rc = main(["eval", "--model", str(d), "--data", str(tmp_path / "none.csv"), "--retrieval"])
    assert rc == 2 and "takes only audio" in capsys.readouterr().err
