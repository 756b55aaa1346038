"""Feature work on the batch (data.features_on=device) equals the loader workers' feature work."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avfusion.data.clips import AugmentConfig, ClipProcessor, FileSegment
from avfusion.data.datasets import collate
from avfusion.data.features import BatchFeatures


def _on_device(cfg, audio="waveform"):
    return dataclasses.replace(cfg, audio_output=audio, video_output="uint8")


@pytest.mark.parametrize("audio", ["waveform", "log_mel"])
@pytest.mark.parametrize("train", [False, True])
def test_batch_features_equal_the_workers(corpus, small_cfg, train, audio):
    # no random masks: the geometry draws (crop box, flip) are the same from the same generator
    cfg = dataclasses.replace(small_cfg, augment=AugmentConfig(freq_mask=0, time_mask=0))
    dev = _on_device(cfg, audio)
    files = [corpus.files["good_a"], corpus.files["six"], corpus.files["odd"]]
    workers, raw = [], []
    for i, f in enumerate(files):
        seg = FileSegment(str(f), None, None, cfg)
        workers.append({**ClipProcessor(cfg, train)(seg, torch.Generator().manual_seed(i)), "id": str(i)})
        raw.append({**ClipProcessor(dev, train)(seg, torch.Generator().manual_seed(i)), "id": str(i)})
    a, b = collate(workers), collate(raw)
    assert b["video"].dtype == torch.uint8
    assert b["audio"].dim() == a["audio"].dim() - (audio == "waveform")  # waveforms, or the log-mel
    out = BatchFeatures(dev, train)(b, torch.Generator().manual_seed(0))
    assert out["video"].shape == a["video"].shape and out["audio"].shape == a["audio"].shape
    torch.testing.assert_close(out["video"], a["video"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["audio"], a["audio"], rtol=0, atol=1e-4)


def test_batch_augmentation_draws_from_the_step_generator(corpus, small_cfg):
    cfg = dataclasses.replace(small_cfg, augment=AugmentConfig(color_jitter=0.4))
    dev = _on_device(cfg)
    seg = FileSegment(str(corpus.files["good_a"]), None, None, dev)
    batch = collate([{**ClipProcessor(dev, True)(seg, torch.Generator().manual_seed(0)), "id": "a"}] * 2)
    f = BatchFeatures(dev, train=True)
    one = f(dict(batch), torch.Generator().manual_seed(3))
    two = f(dict(batch), torch.Generator().manual_seed(3))
    other = f(dict(batch), torch.Generator().manual_seed(4))
    assert torch.equal(one["audio"], two["audio"]) and torch.equal(one["video"], two["video"])
    assert not torch.equal(one["audio"], other["audio"])  # SpecAugment masks drawn per step
    assert (one["audio"] == 0).any()  # masked (normalised mean)


def test_log_mel_batches_get_their_augmentation_on_the_batch(corpus, small_cfg):
    """audio_output="log_mel" (the decoded cache's): workers give the plain log-mel, the batch
    gets SpecAugment from the step's generator."""
    dev = _on_device(small_cfg, "log_mel")
    seg = FileSegment(str(corpus.files["good_a"]), None, None, dev)
    plain = ClipProcessor(dataclasses.replace(dev, augment=AugmentConfig(freq_mask=0, time_mask=0)), True)(
        seg, torch.Generator().manual_seed(0))
    sample = ClipProcessor(dev, True)(seg, torch.Generator().manual_seed(0))
    assert torch.equal(sample["audio"], plain["audio"])  # no masks in the worker
    out = BatchFeatures(dev, train=True)(collate([{**sample, "id": "a"}]), torch.Generator().manual_seed(3))
    assert (out["audio"] == 0).any() and not torch.equal(out["audio"][0], plain["audio"])
