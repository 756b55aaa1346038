"""From a decodable segment to model-ready samples: clip placement, features, transforms.

A *segment* is the part of a file a manifest row names (``start`` .. ``end``, default the whole
file). A *clip* is what one model input covers: ``num_frames`` frames every ``frame_stride``
frames at ``fps`` (video), and ``spec_frames`` fbank frames (audio; 800 frames = 8.015 s of
waveform). Both windows of a clip share one centre time. Training draws the centre uniformly
where the longer window fits inside the segment; evaluation takes K centres uniformly spaced
over the same range (K = 1: the segment's middle). When the segment is shorter than a window, the
window is centred on the segment and reads the file around it (context); it is padded only where
the file has no data (audio: zeros = silence; video: the nearest real frame repeated), see
docs/data.md.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from avfusion.data import audio as A
from avfusion.data import video as V
from avfusion.data.decode import Decoded, DecodeError, decode, open_container, read_timeline
from avfusion.data.timeline import judge
from avfusion.core.config import MODALITIES, ModelConfig, PreprocessConfig
from avfusion.errors import ConfigError


@dataclass
class AugmentConfig:
    """Training-time augmentation (evaluation never augments)."""

    crop_scale: tuple[float, float] = (0.3, 1.0)  # random resized crop area range (scale jitter)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    color_jitter: float = 0.0  # brightness = contrast = saturation strength; 0 = off
    freq_mask: int = 48  # SpecAugment widths in mel bins / frames (AST's AudioSet recipe)
    time_mask: int = 192
    num_freq_masks: int = 1
    num_time_masks: int = 1
    freq_jitter: int = 0  # max mel-bin shift; 0 = off


@dataclass
class ClipConfig:
    """Sizes of one clip, built from a model's config (``from_model``)."""

    num_frames: int = 32
    image_size: tuple[int, int] = (224, 224)
    spec_frames: int = 800
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_clips: int = 4  # K temporal clips at evaluation
    eval_crops: int = 3  # 1 (centre) or 3 (three-crop)
    # "fbank": normalised (T_a, F) log-mel (with SpecAugment when training); "log_mel": the same
    # without augmentation (BatchFeatures augments the batch); "waveform": raw samples
    audio_output: str = "fbank"
    # "normalized": float (3, T, h, w); "uint8": the cropped, flipped frames as uint8 (3, T, h, w),
    # normalised (and colour-jittered) on the batch by avfusion.data.features.BatchFeatures
    video_output: str = "normalized"
    # The modalities a sample carries: training sets the model's (data.clips for train), so that a
    # unimodal model's loader neither decodes nor featurises the other stream. A segment with
    # none of them still gives what it has (the caller then refuses it as before).
    modalities: tuple[str, ...] = MODALITIES

    @classmethod
    def from_model(cls, cfg: ModelConfig, **kw: Any) -> "ClipConfig":
        # spec_size and preprocess.num_mel_bins agree: ModelConfig.validate refuses them otherwise.
        return cls(num_frames=cfg.num_frames, image_size=tuple(cfg.image_size), spec_frames=cfg.spec_size[0],
                   preprocess=cfg.preprocess, **kw)

    @property
    def fbank_spec(self) -> A.FbankSpec:
        return A.FbankSpec.from_config(self.preprocess)

    @property
    def video_seconds(self) -> float:
        return self.num_frames * self.preprocess.frame_stride / self.preprocess.fps

    @property
    def audio_samples(self) -> int:
        return self.fbank_spec.num_samples(self.spec_frames)

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / self.preprocess.sample_rate

    def video_times(self, centre: float) -> np.ndarray:
        p = self.preprocess
        step = p.frame_stride / p.fps
        return centre - self.video_seconds / 2 + np.arange(self.num_frames) * step

    def audio_span(self, centre: float) -> tuple[float, float]:
        t0 = centre - self.audio_seconds / 2
        return t0, t0 + self.audio_seconds


def clip_centres(seg_start: float, seg_end: float, length: float, k: int | None,
                 generator: torch.Generator | None = None) -> list[float]:
    """k uniformly spaced centres (k = None: one uniform random centre) where a window of
    ``length`` fits in [seg_start, seg_end]; the segment's middle when it does not fit."""
    lo, hi = seg_start + length / 2, seg_end - length / 2
    if hi <= lo:
        mid = (seg_start + seg_end) / 2
        return [mid] * (k or 1)
    if k is None:
        return [lo + float(torch.rand(1, generator=generator)) * (hi - lo)]
    if k == 1:
        return [(lo + hi) / 2]
    return list(np.linspace(lo, hi, k))


@dataclass
class ClipRead:
    """What a segment gave for the clips of one sample, before transforms."""

    frames: np.ndarray | None = None  # (K * T, H, W, 3) uint8 in clip order; None: no video
    video_valid: int = 0  # frames that are real (the rest repeat the nearest real frame)
    audio: np.ndarray | None = None  # (K, N) float32 waveforms; None: no audio
    audio_valid: int = 0  # samples that are real (the rest are zeros)
    # (K, T_a, F) log-mel (Kaldi fbank, not normalised) of exactly ``audio``, when the segment
    # keeps its stream's log-mel (a decoded shard cache): then no fbank runs per sample
    features: torch.Tensor | None = None
    damage: list[str] = field(default_factory=list)  # what decoding found (a media file only)
    notes: list[str] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})  # positions damage took


class MediaSegment(Protocol):
    """What clips are cut from: a manifest row's segment of a media file (:class:`FileSegment`)
    or a prepared sample (:class:`avfusion.data.shards.ShardSegment`). ``start`` / ``end`` are
    seconds on the file's timeline (avfusion.data.timeline)."""

    start: float
    end: float
    has_video: bool
    has_audio: bool

    def read(self, times: np.ndarray, spans: Sequence[tuple[float, float]], samples: int,
             modalities: Collection[str] = MODALITIES) -> ClipRead:
        """The frames shown at ``times`` (every clip's frame times, clip order) and ``samples``
        audio samples from the start of each of the K ``spans`` (one per clip); a modality the
        segment lacks, or that is not in ``modalities``, is None (and not decoded)."""
        ...


class FileSegment:
    """A manifest row's segment of a media file, decoded on demand with PyAV.

    ``start`` / ``end`` are the row's seconds from the file's origin (None: the file's edges);
    the segment is placed on the file's timeline (a file whose streams start at 5 s is read
    from 5 s)."""

    def __init__(self, path: str, start: float | None, end: float | None, cfg: ClipConfig,
                 threads: int = 0) -> None:
        self.path, self.cfg, self.threads = path, cfg, threads
        with open_container(path) as c:
            self.timeline = read_timeline(c, path)
        self.has_video, self.has_audio = self.timeline.has_video, self.timeline.has_audio
        if not (self.has_video or self.has_audio):
            raise DecodeError(f"{path}: no audio or video stream")
        seg = self.timeline.segment(start, end)
        self.start, self.end = seg.start, seg.end

    def decode(self, video_times: np.ndarray | None, audio_span: tuple[float, float] | None) -> Decoded:
        p = self.cfg.preprocess
        return decode(self.path, video_times, audio_span, fps=p.fps, sample_rate=p.sample_rate,
                      short_side=p.short_side, threads=self.threads, timeline=self.timeline)

    def read(self, times: np.ndarray, spans: Sequence[tuple[float, float]], samples: int,
             modalities: Collection[str] = MODALITIES) -> ClipRead:
        """See :class:`MediaSegment`; one decode pass for all clips (frames in time order, audio
        over the spans' union), judged against the file's timeline for damage."""
        use_video, use_audio = self.has_video and "video" in modalities, self.has_audio and "audio" in modalities
        union = (min(s[0] for s in spans), max(s[1] for s in spans))
        order = np.argsort(times, kind="stable")
        d = self.decode(times[order] if use_video else None, union if use_audio else None)
        tl, got = self.timeline, ClipRead()
        got.notes += tl.ignored  # cover art: the file is audio-only, and says why
        verdicts = []
        if use_video:
            v = judge(tl, "video", d.video_read, (float(times.min()), float(times.max())), positions=times[order])
            verdicts.append(v)
            got.lost["video"] = v.missing["video"]
            if d.rotation:
                got.notes.append(f"video turned {d.rotation} degrees counter-clockwise, as its display matrix says")
        sr = self.cfg.preprocess.sample_rate
        if use_audio:
            v = judge(tl, "audio", d.audio_read, union, rate=sr)
            verdicts.append(v)
            got.lost["audio"] = v.missing["audio"]
        got.damage = tl.damage(verdicts)
        if d.video is not None:
            got.frames = np.empty_like(d.video)
            got.frames[order] = d.video  # back to clip order
            got.video_valid = d.video_valid
        if d.audio is not None:
            offs = [int(round((s[0] - union[0]) * sr)) for s in spans]
            got.audio = np.stack([take(d.audio, o, samples) for o in offs])  # (K, N)
            got.audio_valid = sum(int(d.audio_real[o : o + samples].sum()) for o in offs)
        return got


class ClipProcessor:
    """Cuts clips from a segment and turns them into tensors (train: 1 random clip, augmented;
    eval: K clips x crops views).

    Besides the tensors a sample says how much of each modality is padding (``video_padded`` in
    frames, ``audio_padded`` in samples: outside the stream, as documented), and for a media
    file what decoding found: ``damage`` (truncation, packets that failed to decode: a list of
    reasons, empty for a sound file) and ``notes`` (e.g. a display rotation that was applied).
    A modality whose stream exists but gave no data at all is left out of the sample (its flag
    False) and named in ``damage``: callers that want a sound file refuse the sample.
    """

    def __init__(self, cfg: ClipConfig, train: bool) -> None:
        self.cfg, self.train = cfg, train

    def modalities(self, seg: MediaSegment) -> tuple[str, ...]:
        """What to read of ``seg``: the configured modalities it has, or all it has when it has none
        of them (the sample then says what it is, and the caller refuses it as without the setting)."""
        have = tuple(m for m, h in (("audio", seg.has_audio), ("video", seg.has_video)) if h)
        return tuple(m for m in have if m in self.cfg.modalities) or have

    # -- placement -------------------------------------------------------------------------
    def centres(self, seg: MediaSegment, generator: torch.Generator | None = None) -> list[float]:
        length = max(self.cfg.video_seconds if seg.has_video else 0.0,
                     self.cfg.audio_seconds if seg.has_audio else 0.0)
        k = None if self.train else self.cfg.eval_clips
        return clip_centres(seg.start, seg.end, length, k, generator)

    # -- one segment -> sample --------------------------------------------------------------
    def __call__(self, seg: MediaSegment, generator: torch.Generator | None = None) -> dict[str, Any]:
        cfg = self.cfg
        centres = self.centres(seg, generator)  # placed by every stream the segment has, read or not
        times = np.concatenate([cfg.video_times(c) for c in centres])  # (K * T,)
        got = seg.read(times, [cfg.audio_span(c) for c in centres], cfg.audio_samples, self.modalities(seg))
        frames, audio = got.frames, got.audio
        out: dict[str, Any] = {"has_video": frames is not None, "has_audio": audio is not None,
                               "damage": got.damage, "notes": got.notes}
        n = len(centres)
        if frames is not None:
            clips = torch.from_numpy(frames).view(n, cfg.num_frames, *frames.shape[1:])  # (K, T, H, W, 3)
            out["video"] = self.video_views(clips, generator)
            out["video_padded"] = int(len(times) - got.video_valid)
            out["video_requested"] = int(len(times))
            out["video_lost"] = min(got.lost["video"], out["video_padded"])
        if audio is not None:
            wav = torch.from_numpy(np.ascontiguousarray(audio))  # (K, N)
            out["audio"] = self.audio_views(wav, generator, got.features)
            out["audio_padded"] = int(wav.numel() - got.audio_valid)
            out["audio_requested"] = int(wav.numel())
            out["audio_lost"] = min(got.lost["audio"], out["audio_padded"])
        return out

    # -- transforms ----------------------------------------------------------------------------
    def video_views(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (K, T, H, W, 3) -> train: (3, T, h, w); eval: (K * crops, 3, T, h, w).

        Geometry runs on uint8 (T, 3, H, W) views; conversion to float happens at crop size."""
        cfg, p = self.cfg, self.cfg.preprocess
        size = tuple(cfg.image_size)
        if self.train:
            x = V.frames_tchw(clips[0])  # (T, 3, H, W) uint8
            if min(x.shape[-2:]) != p.short_side:
                x = V.resize_short_side(x, p.short_side)
            a = cfg.augment
            box = V.random_resized_box(x.shape[-2], x.shape[-1], size, a.crop_scale, a.crop_ratio, generator)
            x = V.resize(V.crop(x, *box), size)
            if a.flip and float(torch.rand(1, generator=generator)) < a.flip:
                x = V.hflip(x)
            if cfg.video_output == "uint8":  # conversion and colour jitter happen on the batch
                return x.transpose(0, 1).contiguous()  # (3, T, h, w) uint8
            if not a.color_jitter:
                return V.tchw_to_normalized(x, p.video_norm)  # (3, T, h, w)
            y = V.color_jitter(V.tchw_to_float(x), a.color_jitter, a.color_jitter, a.color_jitter, generator)
            return V.normalize(y, p.video_norm)
        views = []
        for clip in clips:
            x = V.frames_tchw(clip)
            if cfg.eval_crops == 3:
                # Three-crop: short side to the crop size, crops along the long side.
                views += V.three_crop(V.resize_short_side(x, min(size)), size)
            elif cfg.eval_crops == 1:
                if min(x.shape[-2:]) != p.short_side:
                    x = V.resize_short_side(x, p.short_side)
                views.append(V.center_crop(x, size))
            else:
                raise ConfigError(f"eval_crops must be 1 or 3, got {cfg.eval_crops}")
        if cfg.video_output == "uint8":
            return torch.stack([v.transpose(0, 1) for v in views])  # (V, 3, T, h, w) uint8
        return torch.stack([V.tchw_to_normalized(v, p.video_norm) for v in views])  # (V, 3, T, h, w)

    def audio_views(self, wav: torch.Tensor, generator: torch.Generator | None = None,
                    features: torch.Tensor | None = None) -> torch.Tensor:
        """(K, N) waveform -> train: (T_a, F) (or (N,) waveform); eval: (K * crops, T_a, F).
        ``features``: the waveform's log-mel (K, T_a, F) when the segment had it (not recomputed).

        Audio does not change across spatial crops: each clip's spectrogram is repeated so that
        views line up with the video views."""
        cfg = self.cfg
        if cfg.audio_output == "waveform":
            x = wav
        else:
            x = audio_features(wav, cfg, features)  # (K, T_a, F)
            if self.train and cfg.audio_output != "log_mel":  # "log_mel": BatchFeatures augments the batch
                x = augment_log_mel(x, cfg.augment, generator)
        if self.train:
            return x[0]
        return x.repeat_interleave(cfg.eval_crops if cfg.eval_crops else 1, dim=0)


def take(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """x[start : start + n], zero-padded at the end if rounding left it short."""
    out = x[start : start + n]
    return out if len(out) == n else np.pad(out, (0, n - len(out)))


def augment_log_mel(x: torch.Tensor, a: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation of a normalised log-mel (..., T_a, F), per sample or on a batch:
    frequency jitter, then SpecAugment (masked to 0, the normalised mean)."""
    if a.freq_jitter:
        x = A.freq_jitter(x, a.freq_jitter, generator)
    return A.spec_augment(x, a.freq_mask, a.time_mask, a.num_freq_masks, a.num_time_masks, 0.0, generator)


def audio_features(wav: torch.Tensor, cfg: ClipConfig, log_mel: torch.Tensor | None = None) -> torch.Tensor:
    """Waveform (..., N) -> normalised log-mel (..., spec_frames, F); batched, any device.
    ``log_mel``: the waveform's fbank when it is already known (a segment's cached log-mel).

    Use it on the GPU with ``audio_output="waveform"`` datasets to move fbank off the loaders."""
    spec = A.fbank(wav, cfg.fbank_spec) if log_mel is None else log_mel
    # Short waveforms were already zero-padded to the clip length; fit_frames is a guard.
    spec = A.fit_frames(spec, cfg.spec_frames, math.log(torch.finfo(torch.float32).eps))
    return A.normalize_spec(spec, cfg.preprocess)
