"""Metrics against scikit-learn (the oracle) and against values worked out by hand."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from avfusion.eval import (
    auc_and_d_prime,
    average_precision,
    classification_report,
    d_prime,
    epic_metrics,
    json_safe,
    mean_average_precision,
    mean_class_accuracy,
    report_per_output,
    roc_auc,
    topk_accuracy,
)

EXACT = 1e-12


def _random_case(rng: np.random.Generator, n: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    # Integer scores from a small range give many ties; the normal ones give none.
    scores = rng.integers(0, 4, n).astype(np.float64) if tied else rng.normal(size=n)
    targets = (rng.random(n) < 0.35).astype(np.int64)
    targets[rng.integers(n)] = 1  # at least one positive
    return scores, targets


# -- AP and AUC vs scikit-learn ------------------------------------------------------------------
@pytest.mark.parametrize("tied", [False, True])
def test_average_precision_equals_sklearn(tied):
    rng = np.random.default_rng(1)
    for _ in range(200):
        s, y = _random_case(rng, int(rng.integers(1, 40)), tied)
        assert abs(average_precision(s, y) - average_precision_score(y, s)) < EXACT


@pytest.mark.parametrize("tied", [False, True])
def test_roc_auc_equals_sklearn(tied):
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(200):
        s, y = _random_case(rng, int(rng.integers(2, 40)), tied)
        if y.all():
            continue
        assert abs(roc_auc(s, y) - roc_auc_score(y, s)) < EXACT
        checked += 1
    assert checked > 150


def test_mean_average_precision_and_auc_vs_sklearn_with_a_class_without_positives():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(80, 9)).astype(np.float32)  # float32 with ties
    targets = (rng.random((80, 9)) < 0.3).astype(np.int64)
    targets[:, 4] = 0  # no positives
    targets[:, 7] = 1  # no negatives: AP defined (1.0), AUC undefined
    r = mean_average_precision(torch.from_numpy(scores), torch.from_numpy(targets))

    ref = [average_precision_score(targets[:, c], scores[:, c]) for c in range(9) if c != 4]
    assert r["classes_without_positives"] == [4]
    assert r["num_classes_evaluated"] == 8
    assert math.isnan(r["per_class_ap"][4])
    assert r["per_class_ap"][7] == 1.0
    assert np.allclose([a for c, a in enumerate(r["per_class_ap"]) if c != 4], ref, rtol=0, atol=EXACT)
    assert abs(r["mAP"] - np.mean(ref)) < EXACT
    # scikit-learn itself would count the empty class as 0 (with a warning): that is what we avoid.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert average_precision_score(targets[:, 4], scores[:, 4]) == 0.0

    a = auc_and_d_prime(scores, targets)
    auc_ref = [roc_auc_score(targets[:, c], scores[:, c]) for c in range(9) if c not in (4, 7)]
    assert a["num_classes_auc"] == 7
    assert math.isnan(a["per_class_auc"][4]) and math.isnan(a["per_class_auc"][7])
    assert abs(a["AUC"] - np.mean(auc_ref)) < EXACT
    # d' of the mean AUC, with the standard library's inverse normal CDF as the oracle.
    assert a["d_prime"] == pytest.approx(math.sqrt(2) * NormalDist().inv_cdf(np.mean(auc_ref)), abs=1e-9)


# -- small cases worked out by hand --------------------------------------------------------------
def test_average_precision_by_hand():
    # Ranked +,-,+,-: precision 1/1 at the first positive, 2/3 at the second: (1 + 2/3) / 2.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6, abs=EXACT)
    # A three-way tie is one threshold: precision 1/3 at recall 1/2, then 2/4 at recall 1.
    # AP = 1/2 * 1/3 + 1/2 * 2/4 = 5/12 (a positive-first tie break would give 3/4).
    assert average_precision([0.5, 0.5, 0.5, 0.1], [1, 0, 0, 1]) == pytest.approx(5 / 12, abs=EXACT)
    assert average_precision([0.3, 0.2, 0.1], [0, 0, 1]) == pytest.approx(1 / 3, abs=EXACT)
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_roc_auc_and_d_prime_by_hand():
    # Pairs (positive, negative): (.9,.8)=1, (.9,.1)=1, (.8,.8)=1/2 (tie), (.8,.1)=1 -> 3.5 / 4.
    assert roc_auc([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(0.875, abs=EXACT)
    assert roc_auc([1.0, 1.0, 1.0], [1, 0, 1]) == 0.5
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    assert d_prime(0.5) == 0.0
    assert d_prime(NormalDist().cdf(1.0)) == pytest.approx(math.sqrt(2), abs=1e-12)
    assert d_prime(1.0) == math.inf and d_prime(0.0) == -math.inf
    assert math.isnan(d_prime(math.nan))


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="binary"):
        average_precision([0.1, 0.2], [0.5, 1])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([math.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="kind"):
        classification_report("regression", torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="score_type"):
        classification_report("single", torch.zeros(2, 3), torch.tensor([0, 1]), score_type="softmax")


# -- top-k and mean class accuracy ---------------------------------------------------------------
def test_topk_by_hand_and_clipping():
    scores = torch.tensor([
        [0.1, 0.5, 0.2, 0.9],  # label 3: rank 0
        [0.4, 0.3, 0.2, 0.1],  # label 2: rank 2
        [0.0, 0.1, 0.2, 0.3],  # label 0: rank 3
    ])
    labels = torch.tensor([3, 2, 0])
    r = topk_accuracy(scores, labels, ks=(1, 2, 3, 5))
    third = pytest.approx(1 / 3)
    assert r == {"top1": third, "top2": third, "top3": pytest.approx(2 / 3), "top5": 1.0}


def test_topk_ties_break_to_the_lower_class_index():
    scores = torch.zeros(2, 4)
    assert topk_accuracy(scores, torch.tensor([0, 0]), ks=(1,))["top1"] == 1.0
    assert topk_accuracy(scores, torch.tensor([1, 3]), ks=(1, 3))["top1"] == 0.0
    assert topk_accuracy(scores, torch.tensor([1, 3]), ks=(1, 3))["top3"] == 0.5


def test_topk_and_mean_class_accuracy_vs_sklearn():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(300, 12))
    labels = rng.integers(0, 12, 300)
    labels[labels == 5] = 6  # a class with no samples is left out of the mean class accuracy
    r = topk_accuracy(scores, labels)
    assert r["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1, labels=range(12)), abs=EXACT)
    assert r["top5"] == pytest.approx(top_k_accuracy_score(labels, scores, k=5, labels=range(12)), abs=EXACT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class without samples
        ref = balanced_accuracy_score(labels, scores.argmax(1))
    assert mean_class_accuracy(scores, labels) == pytest.approx(ref, abs=EXACT)


# -- EPIC verb / noun / action -------------------------------------------------------------------
# Cv = 2 verbs, Cn = 3 nouns: 6 joint actions. Per sample, the joint p(v) * p(n) and the rank of
# the labelled pair:
#  s0 pv (.6,.4)  pn (.5,.3,.2)    label (1,0): .20 behind .30       -> action rank 1
#  s1 pv (.9,.1)  pn (.1,.2,.7)    label (0,1): .18 behind .63       -> action rank 1
#  s2 pv (.2,.8)  pn (.05,.9,.05)  label (1,1): .72, the best        -> action rank 0
#  s3 pv (.7,.3)  pn (.6,.3,.1)    label (1,2): .03, the worst of 6  -> action rank 5
PV = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], dtype=torch.float64)
PN = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.05, 0.9, 0.05], [0.6, 0.3, 0.1]], dtype=torch.float64)
VERB = torch.tensor([1, 0, 1, 1])
NOUN = torch.tensor([0, 1, 1, 2])
EPIC_EXPECTED = {
    "verb": {"top1": 0.5, "top5": 1.0},  # right for s1, s2; top5 is clipped to 2 verbs
    "noun": {"top1": 0.5, "top5": 1.0},  # right for s0, s2
    "action": {"top1": 0.25, "top5": 0.75},  # only s2 first; s3 outside the top 5 of 6
}


def test_epic_action_by_hand():
    assert epic_metrics(PV, PN, VERB, NOUN, score_type="probs") == EPIC_EXPECTED
    # From logits: log-probabilities plus any per-row shift softmax back to the same probabilities.
    shift = torch.arange(4, dtype=torch.float64)[:, None] * 3.0
    assert epic_metrics(PV.log() + shift, PN.log() - shift, VERB, NOUN) == EPIC_EXPECTED


def test_epic_action_is_the_joint_top_k_not_verb_and_noun_separately():
    # Verb and noun both in their own top 1 yet the pair is not: impossible with the product, so
    # check the converse: s0 has the noun right and the verb wrong, and its action is still in
    # the top 2 (rank 1), which no "both heads in top-k" rule would give for k = 1 heads.
    r = epic_metrics(PV[:1], PN[:1], VERB[:1], NOUN[:1], ks=(1, 2), score_type="probs")
    assert r["verb"]["top1"] == 0.0 and r["noun"]["top1"] == 1.0
    assert r["action"] == {"top1": 0.0, "top2": 1.0}


def test_multihead_report_splits_concatenated_logits():
    logits = torch.cat([PV.log(), PN.log()], dim=1)  # (4, 2 + 3) in class_splits order
    splits = {"verb": 2, "noun": 3}
    for targets in ({"verb": VERB, "noun": NOUN}, torch.stack([VERB, NOUN], dim=1)):
        r = classification_report("multihead", logits, targets, class_splits=splits)
        assert r["action"] == EPIC_EXPECTED["action"]
        for head in ("verb", "noun"):
            assert {k: r[head][k] for k in ("top1", "top5")} == EPIC_EXPECTED[head]
            assert r[head]["num_samples"] == 4
    with pytest.raises(ValueError, match="class_splits"):
        classification_report("multihead", logits, {"verb": VERB, "noun": NOUN})
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        classification_report("multihead", logits, {"verb": VERB, "noun": NOUN},
                              class_splits={"verb": 3, "noun": 3, "x": 0})


def test_reports_per_kind_and_json_safety():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(20, 5))
    y = (rng.random((20, 5)) < 0.4).astype(int)
    y[:, 0] = 0
    r = classification_report("multilabel", s, y)
    expected_keys = {"mAP", "AUC", "d_prime", "per_class_ap", "num_classes_evaluated", "classes_without_positives"}
    assert expected_keys <= set(r)
    safe = json_safe(r)
    assert safe["per_class_ap"][0] is None and safe["mAP"] == r["mAP"]
    labels = rng.integers(0, 5, 20)
    per_output = report_per_output("single", {"audio": s, "video": -s}, labels)
    assert set(per_output) == {"audio", "video"}
    assert set(per_output["audio"]) == {"top1", "top5", "mean_class_accuracy", "num_samples"}
    assert per_output["audio"]["top5"] == 1.0  # k clipped to 5 classes
