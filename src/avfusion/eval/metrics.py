"""Classification metrics for the papers' evaluation protocols, in plain torch.

Every definition is written out in ``docs/evaluation.md``. In short:

- AP is scikit-learn's ``average_precision_score`` (step-wise, one step per distinct score, so
  tied scores form one threshold); ``mAP`` is the mean over classes with at least one positive.
- AUC is scikit-learn's ``roc_auc_score`` (trapezoidal, ties count one half);
  ``d_prime = sqrt(2) * Phi^-1(mean AUC)`` over classes with both positives and negatives.
- top-k counts a sample as right when fewer than k classes outrank its label (ties broken by
  class index, lower first, as a stable descending sort would).
- EPIC action scores are the outer product of the verb and noun softmax probabilities.

Computation is in float64 on CPU; inputs may be tensors or numpy arrays of any float dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from avfusion.errors import ConfigError, InputError

ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]

TASK_KINDS = ("multilabel", "single", "multihead")
SCORE_TYPES = ("logits", "probs")
_EPIC_CHUNK = 256  # rows of the (N, Cv * Cn) joint action scores held at once
_CLASS_CHUNK = 64  # classes ranked at once: AudioSet's 20k x 527 would otherwise need ~1 GB


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()
    if t.is_complex():
        raise ValueError(f"{name} must be real")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise InputError(f"{name} holds NaN or infinite values; metrics need finite scores (a diverged model?)")
    return t


def _as_labels(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{name} must hold integer class indices")
    return t.long()


def _as_binary(x: ArrayLike, name: str) -> torch.Tensor:
    t = _as_float64(x, name)
    if not ((t == 0) | (t == 1)).all():
        raise ValueError(f"{name} must be binary (0 / 1); soft or mixed-up targets have no AP")
    return t


# -- ranking metrics: AP and ROC AUC, vectorised over classes ------------------------------------
def _ap_auc_rows(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class AP and ROC AUC from one sort, as scikit-learn defines them.

    scores, targets: (C, N), one row per class. Returns (ap, auc), each (C,); AP is NaN without
    positives, AUC without positives or without negatives.

    scikit-learn builds its curves on the distinct scores taken as thresholds, high to low: a run
    of tied scores is a single threshold. With TP_k / FP_k the counts at threshold k and k-1 the
    previous threshold,
      AP  = sum_k (TP_k - TP_{k-1}) / P * TP_k / (TP_k + FP_k)        (step-wise, no interpolation)
      AUC = sum_k (FP_k - FP_{k-1}) / Neg * (TP_{k-1} + TP_k) / (2 P)  (trapezoids)
    """
    c, n = scores.shape
    s, order = scores.sort(dim=1, descending=True)  # (C, N)
    y = targets.gather(1, order)
    tp = y.cumsum(dim=1)  # (C, N) counts at every cut, of which only run ends are thresholds
    fp = torch.arange(1, n + 1, dtype=torch.float64) - tp
    is_end = torch.cat([s[:, 1:] != s[:, :-1], torch.ones(c, 1, dtype=torch.bool)], dim=1)

    def at_previous_threshold(counts: torch.Tensor) -> torch.Tensor:
        # Counts only grow, so a running max over the run ends is the latest threshold's value.
        ends = torch.where(is_end, counts, torch.zeros_like(counts)).cummax(dim=1).values
        return torch.cat([torch.zeros(c, 1, dtype=torch.float64), ends[:, :-1]], dim=1)

    tp_prev, fp_prev = at_previous_threshold(tp), at_previous_threshold(fp)
    num_pos = tp[:, -1]
    num_neg = n - num_pos
    ap = (is_end * (tp - tp_prev) * tp / (tp + fp)).sum(dim=1) / num_pos
    auc = (is_end * (fp - fp_prev) * (tp_prev + tp)).sum(dim=1) / (2 * num_pos * num_neg)
    nan = torch.full_like(ap, math.nan)
    return torch.where(num_pos > 0, ap, nan), torch.where((num_pos > 0) & (num_neg > 0), auc, nan)


def _ap_auc(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``_ap_auc_rows`` for (N, C) inputs, a group of classes at a time to bound memory."""
    s, y = scores.T.contiguous(), targets.T.contiguous()  # (C, N): sorting runs along rows
    parts = [_ap_auc_rows(a, b) for a, b in zip(s.split(_CLASS_CHUNK), y.split(_CLASS_CHUNK), strict=True)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _map_summary(ap: torch.Tensor) -> dict[str, Any]:
    evaluated = ~ap.isnan()
    return {
        "mAP": float(ap[evaluated].mean()) if evaluated.any() else math.nan,
        "per_class_ap": ap.tolist(),
        "num_classes_evaluated": int(evaluated.sum()),
        "classes_without_positives": (~evaluated).nonzero().flatten().tolist(),
    }


def _auc_summary(auc: torch.Tensor) -> dict[str, Any]:
    defined = ~auc.isnan()
    mean_auc = float(auc[defined].mean()) if defined.any() else math.nan
    return {
        "AUC": mean_auc,
        "d_prime": d_prime(mean_auc),
        "per_class_auc": auc.tolist(),
        "num_classes_auc": int(defined.sum()),
    }


def _check_1d_pair(scores: ArrayLike, targets: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    s = _as_float64(scores, "scores")
    y = _as_binary(targets, "targets")
    if s.ndim != 1 or s.shape != y.shape or s.numel() == 0:
        raise ValueError(f"scores and targets must be non-empty (N,) each, got {tuple(s.shape)}, {tuple(y.shape)}")
    return s, y


def _check_2d_pair(scores: ArrayLike, targets: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    s = _as_float64(scores, "scores")
    y = _as_binary(targets, "targets")
    if s.ndim != 2 or s.shape != y.shape or s.shape[0] == 0:
        raise ValueError(f"scores and targets must be non-empty (N, C) each, got {tuple(s.shape)}, "
                         f"{tuple(y.shape)}")
    return s, y


def average_precision(scores: ArrayLike, targets: ArrayLike) -> float:
    """Average precision of one class, equal to ``sklearn.metrics.average_precision_score``.

    scores: (N,) any real scores; targets: (N,) 0 / 1. Returns NaN when there is no positive
    (scikit-learn warns and returns 0 there; see ``mean_average_precision`` for why NaN).
    """
    s, y = _check_1d_pair(scores, targets)
    return float(_ap_auc_rows(s[None], y[None])[0][0])


def roc_auc(scores: ArrayLike, targets: ArrayLike) -> float:
    """ROC AUC of one class, equal to ``sklearn.metrics.roc_auc_score``; NaN if only one class is present."""
    s, y = _check_1d_pair(scores, targets)
    return float(_ap_auc_rows(s[None], y[None])[1][0])


def d_prime(auc: float) -> float:
    """Sensitivity index ``sqrt(2) * Phi^-1(auc)`` (AudioSet / AST); +inf at AUC 1, NaN for NaN."""
    if math.isnan(auc):
        return math.nan
    return math.sqrt(2.0) * float(torch.special.ndtri(torch.tensor(auc, dtype=torch.float64)))


def mean_average_precision(scores: ArrayLike, targets: ArrayLike) -> dict[str, Any]:
    """mAP over the classes that have at least one positive.

    scores: (N, C); targets: (N, C) multi-hot 0 / 1.

    A class without positives has no defined AP (recall is 0 / 0), so it is left out of the
    mean and reported by index in ``classes_without_positives``; its ``per_class_ap`` entry is
    NaN. On the full AudioSet evaluation set every class has positives, so this changes nothing
    there; on subsets it keeps mAP a mean over classes that can be scored, as scenic's
    ``np.nanmean`` over per-class AP intends. Current scikit-learn instead warns and scores such
    a class 0, which would lower mAP for a reason unrelated to the model.

    Returns ``mAP`` (NaN if no class has a positive), ``per_class_ap`` (list of C floats),
    ``num_classes_evaluated`` and ``classes_without_positives``.
    """
    return _map_summary(_ap_auc(*_check_2d_pair(scores, targets))[0])


def auc_and_d_prime(scores: ArrayLike, targets: ArrayLike) -> dict[str, Any]:
    """Mean ROC AUC and d-prime, as the AudioSet / AST evaluation reports them.

    scores: (N, C); targets: (N, C) multi-hot. ``AUC`` is the mean of the per-class AUCs over
    classes that have both positives and negatives (others are undefined and left out);
    ``d_prime`` is ``sqrt(2) * Phi^-1(AUC)`` of that mean (not a mean of per-class d-primes).
    """
    return _auc_summary(_ap_auc(*_check_2d_pair(scores, targets))[1])


# -- accuracy metrics ----------------------------------------------------------------------------
def _label_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank of each sample's label among its classes: (N, C), (N,) -> (N,).

    Classes with a higher score outrank the label, and so do tied classes with a lower index:
    the rank the label gets in a stable descending sort. Ties thus never help or hurt at random.
    """
    c = scores.shape[1]
    true = scores.gather(1, labels[:, None])  # (N, 1)
    lower_index = torch.arange(c)[None, :] < labels[:, None]  # (N, C)
    return ((scores > true) | ((scores == true) & lower_index)).sum(dim=1)


def _check_single(scores: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    s = _as_float64(scores, "scores")
    y = _as_labels(labels, "labels")
    if s.ndim != 2 or y.ndim != 1 or s.shape[0] != y.shape[0] or s.shape[0] == 0:
        raise ValueError(f"expected scores (N, C) and labels (N,), got {tuple(s.shape)}, {tuple(y.shape)}")
    if (y < 0).any() or (y >= s.shape[1]).any():
        raise ValueError(f"labels must lie in [0, {s.shape[1]}), got range [{int(y.min())}, {int(y.max())}]")
    return s, y


def _topk_from_ranks(ranks: torch.Tensor, num_classes: int, ks: Sequence[int]) -> dict[str, float]:
    # k is clipped to C, so "top5" of a 3-class task is 1.0 by definition; the key keeps the asked k.
    return {f"top{k}": float((ranks < min(k, num_classes)).double().mean()) for k in ks}


def topk_accuracy(scores: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose label is among the k best-scored classes, per k.

    scores: (N, C); labels: (N,) int in [0, C). Returns {"top1": ..., "top5": ...} in [0, 1];
    k is clipped to C. Ties are broken by class index (see ``_label_ranks``).
    """
    s, y = _check_single(scores, labels)
    if any(k < 1 for k in ks):
        raise ConfigError(f"every k must be >= 1, got {tuple(ks)}")
    return _topk_from_ranks(_label_ranks(s, y), s.shape[1], ks)


def confusion_matrix(labels: ArrayLike, preds: ArrayLike, num_classes: int) -> torch.Tensor:
    """Counts (num_classes, num_classes): rows are true classes, columns predicted classes."""
    y = _as_labels(labels, "labels").flatten()
    p = _as_labels(preds, "preds").flatten()
    if y.shape != p.shape:
        raise ValueError(f"labels and preds differ in length: {y.numel()} vs {p.numel()}")
    for name, t in (("labels", y), ("preds", p)):
        if t.numel() and ((t < 0).any() or (t >= num_classes).any()):
            raise ValueError(f"{name} must lie in [0, {num_classes})")
    return torch.bincount(y * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def mean_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 recall per class, averaged over the classes that occur in ``labels``.

    Classes with no sample have no recall and are left out (the same rule as mAP's).
    """
    s, y = _check_single(scores, labels)
    preds = s.argmax(dim=1)  # (N,) ties go to the first (lowest) index, as in top-k
    cm = confusion_matrix(y, preds, s.shape[1]).double()
    support = cm.sum(dim=1)
    present = support > 0
    return float((cm.diagonal()[present] / support[present]).mean())


def single_label_metrics(scores: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """top-k accuracies, mean class accuracy and the sample count of a single-label task."""
    s, y = _check_single(scores, labels)
    out: dict[str, Any] = _topk_from_ranks(_label_ranks(s, y), s.shape[1], ks)
    out["mean_class_accuracy"] = mean_class_accuracy(s, y)
    out["num_samples"] = int(s.shape[0])
    return out


# -- EPIC-KITCHENS verb / noun / action ----------------------------------------------------------
def _probs(scores: torch.Tensor, score_type: str) -> torch.Tensor:
    if score_type not in SCORE_TYPES:
        raise ConfigError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
    return scores.softmax(dim=1) if score_type == "logits" else scores


def epic_metrics(verb_scores: ArrayLike, noun_scores: ArrayLike, verb: ArrayLike, noun: ArrayLike,
                 ks: Sequence[int] = (1, 5), score_type: str = "logits") -> dict[str, dict[str, float]]:
    """EPIC-KITCHENS-100 verb, noun and action top-k accuracies.

    verb_scores: (N, Cv); noun_scores: (N, Cn); verb, noun: (N,) int labels.
    score_type: "logits" (softmax is applied per head) or "probs" (already probabilities, e.g.
    after averaging softmax outputs over views).

    Action scores are the joint probabilities p(verb) * p(noun) over all Cv * Cn pairs; an action
    is right when its (verb, noun) pair is the labelled one, i.e. both match. Verb and noun top-k
    use the per-head scores (softmax does not change their ranking).
    """
    vs, v = _check_single(verb_scores, verb)
    ns, n = _check_single(noun_scores, noun)
    if vs.shape[0] != ns.shape[0]:
        raise ValueError(f"verb and noun scores differ in N: {vs.shape[0]} vs {ns.shape[0]}")
    pv, pn = _probs(vs, score_type), _probs(ns, score_type)  # (N, Cv), (N, Cn)
    num_nouns = pn.shape[1]
    action = v * num_nouns + n  # (N,) index into the flattened (Cv, Cn) joint space
    ranks = []
    for i in range(0, pv.shape[0], _EPIC_CHUNK):  # the joint space is Cv * Cn wide: chunk the rows
        joint = (pv[i:i + _EPIC_CHUNK, :, None] * pn[i:i + _EPIC_CHUNK, None, :]).flatten(1)  # (n, Cv*Cn)
        ranks.append(_label_ranks(joint, action[i:i + _EPIC_CHUNK]))
    return {
        "verb": _topk_from_ranks(_label_ranks(vs, v), vs.shape[1], ks),
        "noun": _topk_from_ranks(_label_ranks(ns, n), ns.shape[1], ks),
        "action": _topk_from_ranks(torch.cat(ranks), pv.shape[1] * num_nouns, ks),
    }


# -- one entry point per task kind ---------------------------------------------------------------
def _split_targets(targets: Any, names: list[str]) -> dict[str, torch.Tensor]:
    if isinstance(targets, Mapping):
        missing = [k for k in names if k not in targets]
        if missing:
            raise ValueError(f"multi-head targets lack head(s) {missing}; have {sorted(targets)}")
        return {k: _as_labels(targets[k], f"targets[{k!r}]") for k in names}
    t = _as_labels(targets, "targets")
    if t.ndim != 2 or t.shape[1] != len(names):
        raise ValueError(f"multi-head targets must be a dict or (N, {len(names)}) ints, got {tuple(t.shape)}")
    return {k: t[:, j] for j, k in enumerate(names)}


def classification_report(kind: str, scores: ArrayLike, targets: Any,
                          class_splits: Mapping[str, int] | None = None,
                          score_type: str = "logits") -> dict[str, Any]:
    """The metrics of one output for one task kind.

    kind:
      - "multilabel": scores (N, C), targets (N, C) multi-hot ->
        mAP, per_class_ap, num_classes_evaluated, classes_without_positives, AUC, d_prime.
      - "single": scores (N, C), targets (N,) ints -> top1, top5, mean_class_accuracy, num_samples.
      - "multihead": scores (N, sum of splits), the heads' logits concatenated in the order of
        ``class_splits`` (e.g. {"verb": 97, "noun": 300}); targets a dict head -> (N,) ints or
        (N, heads) ints in that order -> per head the "single" metrics, plus "action" (joint
        top1 / top5, see ``epic_metrics``) when the heads include "verb" and "noun".

    score_type: "logits" or "probs"; only the EPIC action scores depend on it.
    """
    if score_type not in SCORE_TYPES:
        raise ConfigError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
    if kind == "multilabel":
        ap, auc = _ap_auc(*_check_2d_pair(scores, targets))
        auc_summary = _auc_summary(auc)
        del auc_summary["per_class_auc"]  # keep the report to one per-class list
        return {**_map_summary(ap), **auc_summary}
    if kind == "single":
        return single_label_metrics(scores, targets)
    if kind == "multihead":
        if not class_splits:
            raise ConfigError("kind='multihead' needs class_splits, e.g. {'verb': 97, 'noun': 300}")
        s = _as_float64(scores, "scores")
        sizes = list(class_splits.values())
        if s.ndim != 2 or s.shape[1] != sum(sizes):
            raise ValueError(f"scores must be (N, {sum(sizes)}) for class_splits {dict(class_splits)}, "
                             f"got {tuple(s.shape)}")
        names = list(class_splits)
        heads = dict(zip(names, s.split(sizes, dim=1), strict=True))
        labels = _split_targets(targets, names)
        report: dict[str, Any] = {k: single_label_metrics(heads[k], labels[k]) for k in names}
        if "verb" in heads and "noun" in heads:
            epic = epic_metrics(heads["verb"], heads["noun"], labels["verb"], labels["noun"],
                                score_type=score_type)
            report["action"] = epic["action"]
        return report
    raise ConfigError(f"kind must be one of {TASK_KINDS}, got {kind!r}")


def report_per_output(kind: str, outputs: Mapping[str, ArrayLike], targets: Any,
                      class_splits: Mapping[str, int] | None = None,
                      score_type: str = "logits") -> dict[str, dict[str, Any]]:
    """``classification_report`` for each named output (e.g. "logits", "audio", "video", "fusion", "global")."""
    return {name: classification_report(kind, s, targets, class_splits, score_type) for name, s in outputs.items()}
