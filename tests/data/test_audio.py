import json
import math

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from avfusion.data.audio import (Fbank, FbankSpec, fbank, freq_jitter, kaldi_mel_banks, normalize_spec,
                                 spec_augment)
from avfusion.data.decode import decode, probe
import avfusion
from avfusion.core.config import AUDIO_NORM_PRESETS, ModelConfig, PreprocessConfig
from avfusion.errors import ConfigError
from avfusion.models.pretrained import load_config, save_pretrained


@pytest.fixture(scope="module")
def bbb_wave(bigbuckbunny) -> np.ndarray:
    """bigbuckbunny's 5.1 48 kHz AAC, through our decoder: 16 kHz mono."""
    info = probe(bigbuckbunny)
    d = decode(bigbuckbunny, None, (0.0, info.audio.end))
    return d.audio


def knf_fbank(x: np.ndarray, num_bins: int, low_freq: float) -> np.ndarray:
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    o.frame_opts.window_type = "hanning"
    o.mel_opts.num_bins = num_bins
    o.mel_opts.low_freq = low_freq
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(16000, x.tolist())
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


# 128 bins from 20 Hz leave Kaldi's filter 3 empty, which kaldi-native-fbank refuses (see
# audio.py); (128, 60 Hz) is the 128-bin setting it accepts, 80 bins its default layout.
@pytest.mark.parametrize("num_bins,low_freq", [(128, 60.0), (80, 20.0)])
def test_fbank_matches_kaldi_native_fbank_on_real_audio(bbb_wave, num_bins, low_freq):
    ref = knf_fbank(bbb_wave, num_bins, low_freq)
    out = fbank(torch.from_numpy(bbb_wave), FbankSpec(num_mel_bins=num_bins, low_freq=low_freq))
    assert out.shape == ref.shape == (1 + (len(bbb_wave) - 400) // 160, num_bins)
    diff = np.abs(out.numpy() - ref).max()
    assert diff < 1e-3, diff


def test_mel_banks_match_kaldi_native_fbank():
    mo = knf.MelBanksOptions()
    mo.num_bins = 120
    fo = knf.FrameExtractionOptions()
    fo.window_type = "hanning"
    ref = np.array(knf.MelBanks(opts=mo, frame_opts=fo).get_matrix())
    ours = kaldi_mel_banks(120, 512, 16000).numpy()
    assert ours.shape == ref.shape == (120, 257)
    assert np.abs(ours - ref).max() < 1e-4


def test_128_bins_from_20hz_has_torchaudio_behaviour():
    m = kaldi_mel_banks(128, 512, 16000)
    empty = (m.sum(1) == 0).nonzero().flatten().tolist()
    assert empty == [3]
    out = fbank(torch.randn(16000) * 0.1)
    assert out.shape == (98, 128)
    assert torch.allclose(out[:, 3], torch.full((98,), math.log(torch.finfo(torch.float32).eps)))


def test_fbank_batched_equals_single_and_float64():
    x = torch.randn(3, 8000) * 0.2
    batched = fbank(x)
    assert batched.shape == (3, 48, 128)
    for i in range(3):
        assert torch.allclose(batched[i], fbank(x[i]), atol=1e-5)
    assert torch.allclose(batched.double(), Fbank()(x.double()), atol=1e-3)


def test_fbank_too_short_raises():
    with pytest.raises(ValueError, match="at least 400"):
        fbank(torch.zeros(399))


def test_normalisation_presets():
    x = torch.full((10, 128), 1.102 + 2.762)
    assert torch.allclose(normalize_spec(x, PreprocessConfig()), torch.ones(10, 128))
    ast = PreprocessConfig(audio_norm="ast", audio_mean=-4.2677393, audio_std=4.5689974)
    assert torch.allclose(normalize_spec(torch.full((2, 2), -4.2677393 + 2 * 4.5689974), ast), torch.ones(2, 2))
    with pytest.raises(ConfigError, match="unknown audio_norm 'nope'"):
        normalize_spec(x, PreprocessConfig(audio_norm="nope"))


def test_each_preset_owns_its_numbers_as_docs_data_md_gives_them():
    """docs/data.md: mbt (x - 1.102) / 2.762, ast (x + 4.27) / (2 x 4.57), none x. The name alone
    decides: `preprocess.audio_norm=ast` used to keep MBT's mean and std (0 -> -0.1995)."""
    zero = torch.zeros(1)
    for cfg in (PreprocessConfig(audio_norm="ast"), ModelConfig().replace(**{"preprocess.audio_norm": "ast"}).preprocess):
        assert normalize_spec(zero, cfg).item() == pytest.approx(4.2677393 / (2 * 4.5689974)) == pytest.approx(0.467, abs=1e-3)
    x = torch.randn(50, 128) * 4
    assert torch.equal(normalize_spec(x, PreprocessConfig()), (x - 1.102) / 2.762)  # mbt: bit for bit as before
    assert torch.equal(normalize_spec(x, PreprocessConfig(audio_norm="none")), x)
    assert PreprocessConfig().audio_stats() == (1.102, 2.762)


def test_an_explicit_override_and_a_bad_one():
    cfg = PreprocessConfig(audio_norm="ast", audio_std=3.0)
    assert cfg.audio_stats() == (-4.2677393, 6.0)  # the preset's mean and multiplier, this std
    assert PreprocessConfig(audio_mean=0.5).audio_stats() == (0.5, 2.762)
    assert ModelConfig().replace(**{"preprocess.audio_mean": "1e-1"}).preprocess.audio_mean == 0.1  # YAML-ish
    for key, value, why in (("audio_std", 0.0, "a finite number > 0"), ("audio_std", -1, "a finite number > 0"),
                            ("audio_mean", float("nan"), "a finite number"), ("audio_mean", True, "a finite number")):
        with pytest.raises(ConfigError, match=f"preprocess.{key} must be {why}, or null for the 'mbt' preset's"):
            PreprocessConfig(**{key: value})
    with pytest.raises(ConfigError, match="config key 'audio_std' expects float, got 'abc'"):
        ModelConfig().replace(**{"preprocess.audio_std": "abc"})
    with pytest.raises(ConfigError, match="audio_norm='none' leaves the log-mel as it is, but preprocess.audio_mean=0.5"):
        PreprocessConfig(audio_norm="none", audio_mean=0.5)


@pytest.mark.parametrize("stored, stats", [
    ({"audio_norm": "mbt", "audio_mean": 1.102, "audio_std": 2.762}, (1.102, 2.762)),
    ({"audio_norm": "ast", "audio_mean": -4.2677393, "audio_std": 4.5689974}, (-4.2677393, 2 * 4.5689974)),
    ({"audio_norm": "ast", "audio_mean": 1.102, "audio_std": 2.762}, (1.102, 2 * 2.762)),  # what the bug computed
    ({"audio_norm": "none", "audio_mean": 1.102, "audio_std": 2.762}, (0.0, 1.0)),  # "none" ignored them
])
def test_an_old_stored_config_computes_the_numbers_it_did(stored, stats, tmp_path):
    """config.json files written when audio_mean / audio_std were always stored load with the
    same normalisation (the old rule: mean = audio_mean, divisor = audio_std x multiplier,
    none = (0, 1)); numbers equal to the preset's read as the preset."""
    model_dir = tmp_path / "old"
    save_pretrained(avfusion.create_model("mbt_tiny", num_classes=2), model_dir)
    d = json.loads((model_dir / "config.json").read_text())
    d["preprocess"].update(stored)
    (model_dir / "config.json").write_text(json.dumps(d))
    pre = load_config(model_dir).preprocess
    assert pre.audio_stats() == stats
    x = torch.randn(20, 128)
    assert torch.equal(normalize_spec(x, pre), (x - stats[0]) / stats[1])
    plain = stats == (AUDIO_NORM_PRESETS[stored["audio_norm"]][0],
                      AUDIO_NORM_PRESETS[stored["audio_norm"]][1] * AUDIO_NORM_PRESETS[stored["audio_norm"]][2])
    assert (pre.audio_mean is None and pre.audio_std is None) == plain
    if stored["audio_norm"] == "mbt":  # switching an old MBT model's preset gives the new preset's numbers
        assert load_config(model_dir, **{"preprocess.audio_norm": "ast"}).preprocess.audio_stats() == (
            -4.2677393, 2 * 4.5689974)


def test_spec_augment_masks_whole_bands():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 200, 64) + 10
    y = spec_augment(x, freq_mask=20, time_mask=50, generator=g)
    assert y.shape == x.shape
    for b in range(4):
        zero = y[b] == 0
        fcols = zero.all(0)  # masked mel bins: zero at every time
        trows = zero.all(1)
        assert int(fcols.sum()) <= 20 and int(trows.sum()) <= 50
        # everything not in a masked band is untouched
        keep = ~(fcols[None, :] | trows[:, None])
        assert torch.equal(y[b][keep], x[b][keep])
    assert spec_augment(x, 0, 0).equal(x)


def test_freq_jitter_shifts_bins():
    x = torch.arange(16.0).expand(5, 16)[None]  # (1, 5, 16), value = bin index
    g = torch.Generator().manual_seed(1)
    y = freq_jitter(x, 3, g)
    shift = 8 - int(y[0, 0, 8])  # y[j] = x[j - shift]
    assert abs(shift) <= 3
    assert torch.equal(y[0, :, 5:11], x[0, :, 5 - shift : 11 - shift])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fbank_on_gpu_matches_cpu():
    x = torch.randn(4, 16000) * 0.1
    assert torch.allclose(fbank(x.cuda()).cpu(), fbank(x), atol=1e-3)


def test_waveform_output_and_batched_features(corpus, small_cfg):
    import dataclasses

    from avfusion.data.clips import ClipProcessor, FileSegment, audio_features

    cfg = dataclasses.replace(small_cfg, audio_output="waveform")
    seg = FileSegment(str(corpus.files["good_a"]), None, None, cfg)
    s = ClipProcessor(cfg, train=False)(seg)
    assert s["audio"].shape == (6, cfg.audio_samples)
    feats = audio_features(s["audio"], cfg)  # what a GPU loop does on the batch
    ref = ClipProcessor(small_cfg, train=False)(seg)["audio"]
    assert feats.shape == ref.shape == (6, 100, 128)
    assert torch.allclose(feats, ref, atol=1e-5)


def test_stft_path_equals_per_frame_kaldi_at_default_setting(bbb_wave):
    """At the default (128 bins from 20 Hz, which kaldi-native-fbank refuses) the STFT shortcut
    equals Kaldi's per-frame recipe written out plainly (float64, numpy)."""
    x = bbb_wave.astype(np.float64)
    T = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160 : i * 160 + 400] for i in range(T)])
    frames = frames - frames.mean(1, keepdims=True)  # DC removal
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()  # pre-emphasis, Kaldi order
    frames[:, 0] *= 1 - 0.97
    frames *= 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)  # Kaldi "hanning"
    power = np.abs(np.fft.rfft(frames, 512)) ** 2
    mel = power @ kaldi_mel_banks(128, 512, 16000).double().numpy().T
    ref = np.log(np.maximum(mel, np.finfo(np.float32).eps))
    out = fbank(torch.from_numpy(bbb_wave))
    assert out.shape == ref.shape == (T, 128)
    assert np.abs(out.numpy() - ref).max() < 1e-3
