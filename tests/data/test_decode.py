import numpy as np
import pytest

from avfusion.data.decode import DecodeError, decode, grid_times, probe
from helpers.media import make_media, read_index


def test_bigbuckbunny_full_decode(bigbuckbunny):
    info = probe(bigbuckbunny)
    assert (info.width, info.height, info.fps) == (1280, 720, 25.0)
    assert (info.audio_rate, info.audio_channels) == (48000, 6)
    d = decode(bigbuckbunny, grid_times(0, info.video.duration, 25), (0, info.audio.duration), short_side=128)
    # 132 frames at 25 fps = 5.28 s; audio 254976 samples at 48 kHz = 5.312 s -> 84992 at 16 kHz
    assert d.video.shape == (132, 128, 228, 3) and d.video.dtype == np.uint8
    assert d.video_valid == 132
    assert d.audio.shape == (84992,) and d.audio.dtype == np.float32
    assert d.audio_range == (0, 84992)
    assert 0.01 < np.abs(d.audio).max() <= 1.0


def test_frames_at_target_fps_pick_the_shown_frame(corpus):
    # source 25 fps; at 10 fps, t = k / 10 shows source frame floor(2.5 k)
    d = decode(corpus.files["good_a"], grid_times(0.0, 3.0, 10), None)
    got = [read_index(f) for f in d.video]
    assert got == [int(np.floor(2.5 * k + 1e-9)) for k in range(30)]
    # a later start with stride: seek path
    times = 1.5 + np.arange(8) * 2 / 25
    d = decode(corpus.files["good_a"], times, None)
    assert [read_index(f) for f in d.video] == [int(np.floor(t * 25 + 1e-6)) for t in times]


def test_past_the_end_frames_are_padding(corpus):
    times = np.array([2.9, 2.96, 3.0, 3.2])
    d = decode(corpus.files["good_a"], times, None)
    assert [read_index(f) for f in d.video] == [72, 74, 74, 74]
    assert d.video_valid == 2


def test_audio_duration_and_priming(tmp_path):
    # AAC adds 1024 priming samples and pads the last frame; neither may reach the waveform.
    p = make_media(tmp_path / "a.mp4", duration=1.0, video=False, rate=48000, clicks=(0.5,))
    info = probe(p)
    assert info.audio.duration == pytest.approx(1.0, abs=1e-6)
    d = decode(p, None, (0.0, 1.2))
    assert d.audio.shape == (19200,)
    assert d.audio_range == (0, 16000)  # exactly 1.0 s real, the rest zero padding
    assert np.all(d.audio[16000:] == 0)
    # the click written at 0.5 s is found at 0.5 s (within 1 ms)
    peak = int(np.argmax(d.audio))
    assert abs(peak / 16000 - 0.5) < 1e-3


def test_audio_window_before_start_and_offset(tmp_path):
    p = make_media(tmp_path / "c.mp4", duration=1.0, video=False, rate=16000, clicks=(0.25,))
    d = decode(p, None, (-0.1, 0.5))
    assert d.audio.shape == (9600,) and d.audio_range == (1600, 9600)
    assert abs((np.argmax(d.audio) - 1600) / 16000 - 0.25) < 1e-3


def test_six_channel_48k_downmix(corpus):
    d = decode(corpus.files["six"], None, (0.0, 1.5))
    assert d.audio.shape == (24000,) and d.audio_range == (0, 24000)
    # 440 Hz sine: dominant FFT bin
    spec = np.abs(np.fft.rfft(d.audio[:16000]))
    assert abs(np.argmax(spec) - 440) <= 1


def test_missing_streams_are_marked_absent(corpus):
    d = decode(corpus.files["noaudio"], grid_times(0, 1, 25), (0, 1))
    assert d.has_video and not d.has_audio and d.audio is None and d.video.shape[0] == 25
    d = decode(corpus.files["novideo"], grid_times(0, 1, 25), (0, 1))
    assert d.has_audio and not d.has_video and d.video is None and d.audio.shape == (16000,)


def test_odd_frame_size(corpus):
    d = decode(corpus.files["odd"], grid_times(0, 1, 25), None)
    assert d.video.shape == (25, 97, 173, 3)
    d = decode(corpus.files["odd"], grid_times(0, 1, 25), None, short_side=64)
    assert d.video.shape == (25, 64, 114, 3)


@pytest.mark.parametrize("name,match", [("zero", "empty file"), ("random", "cannot open"),
                                        ("truncated_moov", "cannot open")])
def test_unreadable_files_raise_decode_error(corpus, name, match):
    with pytest.raises(DecodeError, match=match):
        decode(corpus.files[name], grid_times(0, 1, 25), (0, 1))


def test_missing_file_raises(tmp_path):
    with pytest.raises(DecodeError, match="not found"):
        probe(tmp_path / "nope.mp4")


@pytest.mark.parametrize("ext,acodec,rate", [("mkv", "libopus", 48000), ("mkv", "mp3", 44100),
                                              ("ogg", "libopus", 48000), ("mp4", "mp3", 44100)])
def test_priming_and_padding_other_codecs(tmp_path, ext, acodec, rate):
    """Opus pre-skip, MP3 encoder delay / padding: 1.000 s in, 1.000 s out, click in place."""
    p = make_media(tmp_path / f"a.{ext}", duration=1.0, video=ext != "ogg", acodec=acodec, rate=rate, clicks=(0.5,))
    d = decode(p, None, (0.0, 1.2))
    lo, hi = d.audio_range
    assert lo == 0 and abs(hi - 16000) <= 16  # within 1 ms
    assert abs(np.argmax(d.audio) / 16000 - 0.5) < 1e-3
