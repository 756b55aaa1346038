"""Audio features: Kaldi-convention log-mel filterbanks on ``torch.stft``, normalisation, SpecAugment.

The released audio checkpoints (AST, MBT) were trained on ``torchaudio.compliance.kaldi.fbank``
features. This module reproduces that convention without torchaudio, batched and on any device:

- frames of 25 ms every 10 ms, ``snip_edges`` (only whole frames: T = 1 + (N - 400) // 160),
- per-frame DC removal, pre-emphasis 0.97, symmetric Hann window (Kaldi's ``hanning``),
- FFT padded to a power of two (512 at 16 kHz), power spectrum,
- triangular filters on the HTK mel scale ``1127 ln(1 + f / 700)`` from 20 Hz to Nyquist, Kaldi's
  layout (the Nyquist bin carries no weight), no dither,
- natural log of ``max(energy, float32 eps)``.

At 16 kHz with 128 bins, Kaldi's filter 3 covers no FFT bin: Kaldi and kaldi-native-fbank refuse
this setting, torchaudio (and so AST / MBT's released features) accept it and output log(eps) in
that bin; so do we.

It matches ``kaldi-native-fbank`` within 1e-3 (tests/data/test_audio.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from avfusion.core.config import PreprocessConfig
from avfusion.errors import ConfigError

_EPS = torch.finfo(torch.float32).eps  # Kaldi's log floor


def _mel(f: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(f, torch.Tensor):
        return 1127.0 * torch.log1p(f / 700.0)
    return 1127.0 * math.log1p(f / 700.0)


def kaldi_mel_banks(
    num_bins: int, n_fft: int, sample_rate: int, low_freq: float = 20.0, high_freq: float = 0.0
) -> torch.Tensor:
    """Kaldi's triangular mel filters, (num_bins, n_fft // 2 + 1); the Nyquist column is zero."""
    nyquist = sample_rate / 2
    if high_freq <= 0:
        high_freq = nyquist + high_freq
    if not 0 <= low_freq < high_freq <= nyquist:
        raise ConfigError(f"bad mel range low={low_freq} high={high_freq} for sample rate {sample_rate}")
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    m = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left, center, right = mel_low + m * delta, mel_low + (m + 1) * delta, mel_low + (m + 2) * delta
    # Kaldi evaluates n_fft // 2 bins (0 .. Nyquist excluded).
    freqs = torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft)
    mel = _mel(freqs)[None, :]  # (1, n_fft/2)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    w = torch.where(mel <= center, up, down)
    w = torch.where((mel > left) & (mel < right), w, torch.zeros_like(w))
    return torch.nn.functional.pad(w, (0, 1)).float()  # (num_bins, n_fft/2 + 1)


def kaldi_hann(length: int) -> torch.Tensor:
    """Kaldi's ``hanning`` window: symmetric, 0.5 - 0.5 cos(2 pi i / (N - 1))."""
    return torch.hann_window(length, periodic=False, dtype=torch.float64)


@dataclass
class FbankSpec:
    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemph: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist (Kaldi's convention)

    @property
    def win(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def hop(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def n_fft(self) -> int:
        return 1 << (self.win - 1).bit_length()

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win else 1 + (num_samples - self.win) // self.hop

    def num_samples(self, num_frames: int) -> int:
        """Samples needed for exactly ``num_frames`` frames."""
        return self.win + (num_frames - 1) * self.hop

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> "FbankSpec":
        return cls(cfg.sample_rate, cfg.num_mel_bins, cfg.frame_length_ms, cfg.frame_shift_ms)


class Fbank(torch.nn.Module):
    """Batched Kaldi log-mel fbank: waveform (..., N) -> (..., T, F), T = 1 + (N - win) // hop.

    Works on any device and dtype (float32 by default; float64 for reference checks). The
    per-frame DC removal and pre-emphasis are linear, so they are applied as one STFT of the
    pre-emphasised signal minus a per-frame DC correction (exact, see ``forward``).
    """

    def __init__(self, spec: FbankSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or FbankSpec()
        win, n_fft = self.spec.win, self.spec.n_fft
        window = torch.nn.functional.pad(kaldi_hann(win), (0, n_fft - win))  # frame at the left
        self.register_buffer("window", window.float(), persistent=False)
        # DFT of the (padded) window: what a constant frame of 1 contributes to each bin.
        self.register_buffer("window_dft", torch.fft.rfft(window).to(torch.complex64), persistent=False)
        self.register_buffer(
            "mel", kaldi_mel_banks(
                self.spec.num_mel_bins, n_fft, self.spec.sample_rate, self.spec.low_freq, self.spec.high_freq
            ), persistent=False
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        s = self.spec
        lead = wav.shape[:-1]
        x = wav.reshape(-1, wav.shape[-1])  # (B, N)
        if x.shape[-1] < s.win:
            raise ValueError(f"fbank needs at least {s.win} samples, got {x.shape[-1]}")
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        x = x.to(dtype)
        T = s.num_frames(x.shape[-1])
        # Kaldi per frame f (length win): y = f - mean(f); z[i] = y[i] - a y[i-1], z[0] = (1 - a) y[0].
        # Hann has w[0] = 0, so z[0] never counts, and for i >= 1
        #   z[i] = p[t0 + i] - (1 - a) mean(f),  p = x - a x[n-1]   (global pre-emphasis).
        # Hence rfft(w z) = STFT(p) - (1 - a) mean(f) DFT(w).
        a = s.preemph
        p = torch.cat([x[:, :1] * (1 - a), x[:, 1:] - a * x[:, :-1]], dim=-1)  # (B, N)
        p = torch.nn.functional.pad(p, (0, s.n_fft - s.win))  # last frame reads n_fft samples
        window = self.window.to(dtype)
        spec = torch.stft(
            p, s.n_fft, hop_length=s.hop, win_length=s.n_fft, window=window, center=False, return_complex=True
        )  # (B, n_fft/2 + 1, T)
        spec = spec[..., :T]
        means = x.unfold(-1, s.win, s.hop)[:, :T].mean(-1)  # (B, T)
        wdft = self.window_dft.to(spec.dtype)
        spec = spec - (1 - a) * means[:, None, :] * wdft[None, :, None]
        power = spec.real.square() + spec.imag.square()  # (B, K, T)
        mel = torch.matmul(self.mel.to(dtype), power)  # (B, F, T)
        out = torch.log(mel.clamp_min(_EPS)).transpose(1, 2)  # (B, T, F)
        return out.reshape(*lead, T, s.num_mel_bins)


_FBANK_CACHE: dict[tuple, Fbank] = {}


def fbank(wav: torch.Tensor, spec: FbankSpec | None = None) -> torch.Tensor:
    """Functional form of :class:`Fbank` (modules cached per spec and device)."""
    spec = spec or FbankSpec()
    key = (*dataclasses.astuple(spec), wav.device)
    mod = _FBANK_CACHE.get(key)
    if mod is None:
        mod = _FBANK_CACHE[key] = Fbank(spec).to(wav.device)
    return mod(wav)


def fit_frames(spec: torch.Tensor, num_frames: int, pad_value: float) -> torch.Tensor:
    """Crop or pad (..., T, F) to exactly ``num_frames`` along T (padding at the end)."""
    T = spec.shape[-2]
    if T >= num_frames:
        return spec[..., :num_frames, :]
    pad = spec.new_full((*spec.shape[:-2], num_frames - T, spec.shape[-1]), pad_value)
    return torch.cat([spec, pad], dim=-2)


def normalize_spec(spec: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """Log-mel ``spec`` normalised by ``cfg``'s preset (and overrides): PreprocessConfig.audio_stats."""
    mean, div = cfg.audio_stats()
    return (spec - mean) / div


# -- augmentation ------------------------------------------------------------------------


def spec_augment(
    spec: torch.Tensor,
    freq_mask: int = 48,
    time_mask: int = 192,
    num_freq_masks: int = 1,
    num_time_masks: int = 1,
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment on (T, F) or (B, T, F): masks of width U[0, max) set to ``value``.

    Applied after normalisation, ``value = 0`` is the dataset mean (AST's recipe uses 48 / 192).
    Each sample in a batch gets its own masks.
    """
    squeeze = spec.dim() == 2
    x = spec[None] if squeeze else spec
    B, T, F = x.shape
    x = x.clone()
    dev = x.device

    def masks(n: int, width: int, size: int) -> torch.Tensor:  # (B, size) bool
        m = torch.zeros(B, size, dtype=torch.bool, device=dev)
        if width <= 0 or n <= 0:
            return m
        pos = torch.arange(size, device=dev)
        for _ in range(n):
            w = torch.randint(0, min(width, size) + 1, (B, 1), generator=generator).to(dev)
            s = (torch.rand(B, 1, generator=generator).to(dev) * (size - w + 1)).long()
            m |= (pos >= s) & (pos < s + w)
        return m

    fm = masks(num_freq_masks, freq_mask, F)  # (B, F)
    tm = masks(num_time_masks, time_mask, T)  # (B, T)
    x = x.masked_fill(fm[:, None, :] | tm[:, :, None], value)
    return x[0] if squeeze else x


def freq_jitter(spec: torch.Tensor, max_shift: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift the spectrogram along the mel axis by U{-max, max} bins, filling with the edge value.

    A cheap pitch / timbre perturbation ("frequency jittering"); (T, F) or (B, T, F).
    """
    squeeze = spec.dim() == 2
    x = spec[None] if squeeze else spec
    B, T, F = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (B,), generator=generator).to(x.device)
    idx = (torch.arange(F, device=x.device)[None, :] - shifts[:, None]).clamp(0, F - 1)  # (B, F)
    out = torch.gather(x, 2, idx[:, None, :].expand(B, T, F))
    return out[0] if squeeze else out
