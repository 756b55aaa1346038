"""The feature work of a loader worker, done on the batch where the model runs (the GPU).

With ``ClipConfig(audio_output="waveform", video_output="uint8")`` workers only decode, place,
crop, resize and flip; :class:`BatchFeatures` then turns the batch into model inputs on its
device: video uint8 -> float, normalised (and colour-jittered when training); audio waveform ->
Kaldi fbank -> normalised log-mel, with SpecAugment and frequency jitter when training. With
``audio_output="log_mel"`` (a decoded shard cache, which keeps each sample's log-mel) the
workers give the normalised log-mel and only the augmentation runs on the batch. The
results equal the workers' (tested) except for which random masks and jitters are drawn: here
from the step's generator (seeded from the run's seed and the step, so resume stays exact),
there from each sample's seed. Training switch: ``data.features_on`` (``auto``: the device when
it is a GPU).
"""

from __future__ import annotations

from typing import Any

import torch

from avfusion.data import video as V
from avfusion.data.clips import ClipConfig, audio_features, augment_log_mel


class BatchFeatures:
    """``batch -> batch`` on the batch's device (see the module docstring)."""

    def __init__(self, cfg: ClipConfig, train: bool) -> None:
        self.cfg, self.train = cfg, train

    def __call__(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        cfg, p = self.cfg, self.cfg.preprocess
        video = batch.get("video")
        if video is not None and video.dtype == torch.uint8:  # (B, [V,] 3, T, h, w)
            if self.train and cfg.augment.color_jitter:
                s = cfg.augment.color_jitter
                x = video.float().div_(255.0)
                x = torch.stack([V.color_jitter(c, s, s, s, generator) for c in x])
                batch["video"] = V.normalize(x.movedim(-4, 0), p.video_norm).movedim(0, -4)
            else:
                mean, std = V.VIDEO_NORM_PRESETS[p.video_norm]
                shape = (3, 1, 1, 1)
                scale = torch.tensor([1.0 / (255.0 * x) for x in std], device=video.device).view(shape)
                shift = torch.tensor([m / x for m, x in zip(mean, std)], device=video.device).view(shape)
                batch["video"] = video.float().mul_(scale).sub_(shift)
        audio = batch.get("audio")
        if audio is not None and cfg.audio_output in ("waveform", "log_mel"):  # (B, [V,] N) / (B, [V,] T_a, F)
            x = audio_features(audio, cfg) if cfg.audio_output == "waveform" else audio  # (B, [V,] T_a, F)
            batch["audio"] = augment_log_mel(x, cfg.augment, generator) if self.train else x
        return batch
