import pytest
import torch

from avfusion.data import video as V
from avfusion.data.mixup import mixup, sample_beta
from avfusion.data.samplers import DistributedWeightedSampler, balanced_sampler, label_weights
from avfusion.data.manifest import LabelMap, Row


def frames(t=4, h=60, w=80):
    x = torch.arange(w, dtype=torch.uint8).expand(t, h, w)  # value = column
    return torch.stack([x, x, x], -1)  # (T, H, W, 3)


def test_to_float_and_normalise_presets():
    x = V.to_float(frames())
    assert x.shape == (3, 4, 60, 80) and x.max() <= 1
    s = V.normalize(torch.ones(3, 2, 2, 2), "scenic")
    assert torch.allclose(s, torch.ones_like(s))
    assert torch.allclose(V.normalize(torch.zeros(3, 1, 1, 1), "scenic"), -torch.ones(3, 1, 1, 1))
    im = V.normalize(torch.full((3, 1, 1, 1), 0.485), "imagenet")
    assert im[0].abs().max() < 1e-6
    with pytest.raises(ValueError):
        V.normalize(s, "nope")
    u8 = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    for preset in ("scenic", "imagenet"):
        ref = V.normalize(u8.transpose(0, 1).float() / 255, preset)
        assert torch.allclose(V.tchw_to_normalized(u8, preset), ref, atol=1e-5)
    # uint8 and float resize agree within one grey level
    big = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
    assert (V.resize(big, (20, 30)).float() - V.resize(big.float(), (20, 30))).abs().max() <= 1.01


def test_resize_and_crops():
    x = V.to_float(frames())
    assert V.resize_short_side(x, 30).shape == (3, 4, 30, 40)
    c = V.center_crop(x, (40, 40))
    assert c.shape == (3, 4, 40, 40) and c[0, 0, 0, 0] * 255 == pytest.approx(20)
    left, mid, right = V.three_crop(x, (60, 60))
    assert left[0, 0, 0, 0] * 255 == pytest.approx(0) and mid[0, 0, 0, 0] * 255 == pytest.approx(10)
    assert right[0, 0, 0, -1] * 255 == pytest.approx(79)
    tall = x.transpose(-1, -2)  # portrait: crops along the height
    assert [c.shape for c in V.three_crop(tall, (60, 60))] == [(3, 4, 60, 60)] * 3
    tiny = V.to_float(frames(2, 7, 9))  # frames smaller than the crop are upscaled first
    assert V.center_crop(tiny, (16, 16)).shape == (3, 2, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert V.random_resized_crop(x, (32, 32), generator=g).shape == (3, 4, 32, 32)
    assert V.random_crop(x, (50, 50), generator=g).shape == (3, 4, 50, 50)
    assert torch.equal(V.hflip(x)[..., 0], x[..., -1])


def test_color_jitter_range_and_consistency():
    x = torch.rand(3, 4, 8, 8)
    y = V.color_jitter(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert torch.equal(V.color_jitter(x, 0, 0, 0), x)


def test_mixup_shares_lambda_and_respects_absence():
    B = 4
    batch = {"id": list("abcd"), "video": torch.rand(B, 3, 2, 4, 4), "audio": torch.rand(B, 10, 8),
             "has_video": torch.tensor([True, True, True, False]), "has_audio": torch.ones(B, dtype=torch.bool),
             "label": torch.tensor([0, 1, 2, 0])}
    batch["video"][3] = 0
    out = mixup(batch, alpha=1.0, num_classes=3, generator=torch.Generator().manual_seed(3))
    lam, perm = out["mixup_lambda"], out["mixup_perm"]
    assert 0 < lam < 1
    a = lam * batch["audio"] + (1 - lam) * batch["audio"][perm]
    assert torch.allclose(out["audio"], a)
    for i in range(B):
        real = bool(batch["has_video"][i] and batch["has_video"][perm[i]])
        exp = lam * batch["video"][i] + (1 - lam) * batch["video"][perm[i]] if real else batch["video"][i]
        assert torch.allclose(out["video"][i], exp)
    assert torch.allclose(out["label"].sum(1), torch.ones(B))
    onehot = torch.nn.functional.one_hot(batch["label"], 3).float()
    assert torch.allclose(out["label"], lam * onehot + (1 - lam) * onehot[perm])
    with pytest.raises(ValueError):
        mixup(batch, 1.0)  # int labels without num_classes


def test_sample_beta_mean():
    g = torch.Generator().manual_seed(0)
    xs = torch.tensor([sample_beta(0.3, g) for _ in range(2000)])
    assert abs(xs.mean() - 0.5) < 0.03 and (xs < 0.1).float().mean() > 0.2  # U-shaped


def test_balanced_weights_and_distributed_split():
    m = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.float)
    w = label_weights(m, eps=0.0)
    assert torch.allclose(w, torch.tensor([0.25, 0.25, 0.25, 0.5, 0.75]))
    labels = LabelMap.from_names(["a", "b"])
    rows = [Row(str(i), "x", labels=[n for n, v in zip("ab", r) if v]) for i, r in enumerate(m.tolist())]
    s = balanced_sampler(rows, labels, num_samples=10001, rank=0, world_size=1, seed=1)
    assert torch.allclose(s.weights.float(), label_weights(m))
    draws = torch.tensor(list(s))
    # label b's share matches label a's (balanced): a-draws count rows 0,1,2,4; b-draws 3,4
    a = torch.isin(draws, torch.tensor([0, 1, 2, 4])).float().mean()
    b = torch.isin(draws, torch.tensor([3, 4])).float().mean()
    assert abs(a / (a + b) - 0.5) < 0.05  # expected 1.75 / 3.5
    ranks = [DistributedWeightedSampler(w, 11, rank=r, world_size=3, seed=5) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]
    full = DistributedWeightedSampler(w, 12, rank=0, world_size=1, seed=5)
    interleaved = [x for trio in zip(*[list(r) for r in ranks]) for x in trio]
    assert interleaved == list(full)  # ranks partition one shared draw
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != list(DistributedWeightedSampler(w, 11, rank=0, world_size=3, seed=5))
