"""Cross-modal retrieval for contrastive models: audio -> video and video -> audio.

Every video of an evaluation set is one audio embedding and one video embedding; each audio
embedding queries all the video embeddings (and the other way round), and the query's own
video is the one right answer. Reported per direction: Recall@1/5/10 (the fraction of queries
whose answer ranks in the top k) and the median (and mean) rank of the answer, beside what
chance gives on as many videos.

Embeddings. A model pretrained by ``avfusion pretrain`` keeps its contrastive projectors beside
its weights (``projectors.safetensors`` + ``projectors.json``, written at the end of the run);
the audio and video features (``ModelOutput.features``, averaged over the video's clips x crops,
as ``avfusion embed`` averages them) go through the ``audio`` and ``video`` projectors into the
space InfoNCE trained. A model without them is ranked on its raw features, and the report says
so: those were never trained to share a space, so near-chance numbers are expected there.
Similarity is the cosine (dot product of L2-normalised embeddings), computed in float64.

Ties. The answer's rank is 1 + the number of *other* candidates at least as similar to the
query: a tie counts against the query, so a model whose embeddings all coincide ranks every
answer last (never at chance by luck of the order). Recall@k = mean(rank <= k), k clipped to
the number of videos; the median of an even number of ranks is the mean of the two middle ones.

Videos without both modalities (no audio stream, or nothing decodable in one) cannot take part
and are counted in ``skipped``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.errors import InputError
from avfusion.eval.aggregate import average_views
from avfusion.utils.files import atomic_write

PROJECTORS_WEIGHTS = "projectors.safetensors"
PROJECTORS_CONFIG = "projectors.json"
KS = (1, 5, 10)
TIES = "a tie counts against the query: rank = 1 + the number of other candidates at least as similar"


# -- the metric ---------------------------------------------------------------------------------


def retrieval_ranks(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """(N, D) queries, (N, D) gallery, row i the answer to query i -> (N,) 1-based ranks of the
    answers under cosine similarity, ties counted against the query."""
    if queries.shape != gallery.shape or queries.ndim != 2:
        raise ValueError(f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)} must both be (N, D)")
    q = F.normalize(queries.double(), dim=-1)
    g = F.normalize(gallery.double(), dim=-1)
    sim = q @ g.T  # (N, N)
    answer = sim.diagonal().unsqueeze(1)  # (N, 1)
    return (sim >= answer).sum(1)  # counts the answer itself: 1 + the others at least as similar


def recall_summary(ranks: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k per k, median and mean rank of (N,) 1-based ranks."""
    r = ranks.double()
    out = {f"R@{k}": float((r <= k).double().mean()) for k in ks}
    out["median_rank"] = float(r.quantile(0.5))  # linear interpolation: the mean of the middle two
    out["mean_rank"] = float(r.mean())
    return out


def chance(n: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """What a random order gives on ``n`` videos: Recall@k = min(k, n) / n, median rank (n + 1) / 2."""
    return {**{f"R@{k}": min(k, n) / n for k in ks}, "median_rank": (n + 1) / 2, "mean_rank": (n + 1) / 2}


def retrieval_metrics(audio: torch.Tensor, video: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, Any]:
    """Both directions on (N, D) audio and video embeddings of the same N videos, in order."""
    n = audio.shape[0]
    if n < 2:
        raise InputError(f"retrieval needs at least 2 videos with both audio and video, got {n}")
    return {"num_videos": n, "audio->video": recall_summary(retrieval_ranks(audio, video), ks),
            "video->audio": recall_summary(retrieval_ranks(video, audio), ks), "chance": chance(n, ks),
            "ties": TIES}


# -- the projectors beside a model ----------------------------------------------------------------


def save_projectors(directory: str | os.PathLike, head: nn.Module, spec: dict[str, Any]) -> Path:
    """``head.proj`` (a ContrastiveHead's projectors, name -> Projector) into ``directory`` as
    ``projectors.safetensors`` and ``projectors.json`` (``spec``: dim, out_dim, hidden, pairs,
    temperature), each written atomically."""
    import safetensors.torch

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in head.proj.state_dict().items()}
    atomic_write(directory / PROJECTORS_WEIGHTS, safetensors.torch.save(state))
    meta = {**spec, "outputs": sorted(head.proj.keys())}
    atomic_write(directory / PROJECTORS_CONFIG, (json.dumps(meta, indent=2) + "\n").encode())
    return directory


def load_projectors(directory: str | os.PathLike, num_features: int) -> dict[str, nn.Module] | None:
    """The projectors a pretraining run kept in ``directory`` (output name -> Projector, eval
    mode), or None when it has none. Projectors for features of another width are an InputError."""
    from avfusion.heads.projector import Projector
    from avfusion.models.pretrained import read_safetensors

    directory = Path(directory)
    weights, config = directory / PROJECTORS_WEIGHTS, directory / PROJECTORS_CONFIG
    if not weights.is_file() or not config.is_file():
        return None
    try:
        meta = json.loads(config.read_text())
        dim, out_dim, hidden = int(meta["dim"]), int(meta["out_dim"]), int(meta["hidden"])
        outputs = list(meta["outputs"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{config}: not a projector config ({e})") from None
    if dim != num_features:
        raise InputError(f"{config}: projectors for {dim}-wide features, but the model's are {num_features} wide "
                         "(they belong to another model)")
    state = read_safetensors(weights)  # damaged: one line naming the file and what is wrong
    projectors: dict[str, nn.Module] = {}
    for name in outputs:
        p = Projector(dim, out_dim, hidden)
        mine = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        try:
            p.load_state_dict(mine)
        except RuntimeError as e:
            raise InputError(f"{weights}: projector {name!r} does not match {config.name} "
                             f"({str(e).splitlines()[0]})") from None
        projectors[name] = p.eval()
    return projectors


# -- the report ----------------------------------------------------------------------------------


def video_features(parts: Sequence[dict[str, Any]]) -> dict[str, tuple[list[Any], torch.Tensor]]:
    """Per-rank raw results of one condition (evaluate.run_views with ``features=True``) ->
    output name -> (video ids, (N, D) features averaged over each video's views)."""
    chunks: dict[str, list[tuple[list[Any], list[int], torch.Tensor]]] = {}
    for p in parts:
        for name, got in p.get("features", {}).items():
            chunks.setdefault(name, []).extend(got)
    out = {}
    for name, got in chunks.items():
        ids = [i for c in got for i in c[0]]
        views = [v for c in got for v in c[1]]
        vp = average_views(torch.cat([c[2] for c in got]), ids, views)
        out[name] = (list(vp.ids), vp.scores)
    return out


class Retrieval:
    """The retrieval section of an evaluation report, from the per-rank raw results of the
    all-modalities condition (the hook ``evaluate_dataset(retrieval=...)`` calls)."""

    def __init__(self, projectors: dict[str, nn.Module] | None, source: str | None = None) -> None:
        self.projectors, self.source = projectors, source

    @torch.no_grad()
    def __call__(self, parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
        feats = video_features(parts)
        all_ids = {i for ids, _ in feats.values() for i in ids}
        if "audio" not in feats or "video" not in feats:
            return {"error": "the model gave no audio and video features for the same videos: retrieval needs both",
                    "num_videos": 0, "skipped": len(all_ids)}
        a_ids, a = feats["audio"]
        v_ids, v = feats["video"]
        a_pos, v_pos = {i: k for k, i in enumerate(a_ids)}, {i: k for k, i in enumerate(v_ids)}
        both = [i for i in a_ids if i in v_pos]  # in average_views' (sorted) order
        a, v = a[[a_pos[i] for i in both]], v[[v_pos[i] for i in both]]
        proj = self.projectors or {}
        if "audio" in proj and "video" in proj:
            a, v = proj["audio"](a.float()), proj["video"](v.float())
            space = "projected"
            note = f"the audio and video projectors of contrastive pretraining ({self.source or PROJECTORS_WEIGHTS})"
        else:
            space = "raw features"
            note = ("no contrastive projectors beside the model (pretrain writes projectors.safetensors): ranked on the "
                    "raw audio and video features, which were not trained to share a space; expect near chance")
        if len(both) < 2:
            return {"space": space, "note": note, "num_videos": len(both), "skipped": len(all_ids) - len(both),
                    "error": "fewer than 2 videos have both audio and video"}
        report = retrieval_metrics(a, v)
        return {"space": space, "note": note, **report, "skipped": len(all_ids) - len(both)}


__all__ = ["retrieval_ranks", "recall_summary", "chance", "retrieval_metrics", "save_projectors", "load_projectors",
           "video_features", "Retrieval", "PROJECTORS_WEIGHTS", "PROJECTORS_CONFIG"]
