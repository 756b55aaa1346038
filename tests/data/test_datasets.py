import numpy as np
import pytest
import torch

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment, clip_centres
from avfusion.data.datasets import VideoDataset, collate, split_by_presence
from avfusion.errors import ConfigError, SampleError
from avfusion.data.manifest import LabelMap, Row, read_manifest
from avfusion.core.config import ModelConfig


def test_clip_config_from_model():
    cfg = ClipConfig.from_model(ModelConfig())
    # MBT AudioSet: 32 frames every 2 at 25 fps = 2.56 s; 800 fbank frames = 8.015 s
    assert cfg.video_seconds == pytest.approx(2.56)
    assert cfg.audio_samples == 400 + 799 * 160
    assert cfg.image_size == (224, 224) and cfg.spec_frames == 800
    # mel bins that disagree never get as far as a clip: the model config refuses them (one place)
    with pytest.raises(ConfigError, match=r"spec_size \(96, 32\) has 32 mel bins but preprocess.num_mel_bins is 128"):
        ModelConfig(spec_size=(96, 32))
    with pytest.raises(ConfigError, match="preprocess.num_mel_bins is 64; set both"):
        ModelConfig().replace(**{"preprocess.num_mel_bins": 64})


def test_clip_centres():
    assert clip_centres(0, 10, 8, 1) == [5.0]
    assert clip_centres(0, 10, 8, 3) == pytest.approx([4.0, 5.0, 6.0])
    assert clip_centres(2, 3, 8, 2) == [2.5, 2.5]  # too short: centred, padded
    g = torch.Generator().manual_seed(0)
    c = [clip_centres(0, 10, 4, None, g)[0] for _ in range(100)]
    assert min(c) >= 2 and max(c) <= 8 and np.std(c) > 1


def test_bigbuckbunny_through_the_pipeline(bigbuckbunny):
    """The real 720p / 5.1 48 kHz file to model-ready tensors, MBT-like sizes (short audio)."""
    cfg = ClipConfig(num_frames=8, image_size=(224, 224), spec_frames=500, eval_clips=2, eval_crops=3)
    seg = FileSegment(str(bigbuckbunny), None, None, cfg)
    assert seg.end == pytest.approx(5.312)
    s = ClipProcessor(cfg, train=True)(seg, torch.Generator().manual_seed(0))
    assert s["video"].shape == (3, 8, 224, 224) and s["video"].dtype == torch.float32
    assert s["audio"].shape == (500, 128)
    assert s["video"].min() >= -1 and s["video"].max() <= 1
    assert s["video_padded"] == 0 and s["audio_padded"] == 0
    e = ClipProcessor(cfg, train=False)(seg)
    assert e["video"].shape == (6, 3, 8, 224, 224) and e["audio"].shape == (6, 500, 128)
    assert torch.equal(e["audio"][0], e["audio"][2]) and not torch.equal(e["audio"][0], e["audio"][3])


def test_short_clip_is_padded_and_counted(corpus, small_cfg):
    seg = FileSegment(str(corpus.files["short"]), None, None, small_cfg)
    s = ClipProcessor(small_cfg, train=True)(seg)
    # 0.2 s of media for a 1.015 s audio window and a 0.32 s video window, both centred
    assert s["audio"].shape == (100, 128) and s["video"].shape == (3, 4, 48, 48)
    assert s["audio_padded"] == small_cfg.audio_samples - 3200
    assert s["video_padded"] >= 1


def test_dataset_train_eval_and_missing_modality(corpus, small_cfg):
    labels = LabelMap.read(corpus.labels)
    rows = read_manifest(corpus.good_manifest)
    ds = VideoDataset(rows, labels, small_cfg, train=True, seed=0)
    samples = [ds[i] for i in range(len(ds))]
    by_id = {s["id"]: s for s in samples}
    assert by_id["good_a"]["label"].tolist() == [1.0, 1.0, 0.0]
    assert "audio" not in by_id["noaudio"] and by_id["noaudio"]["has_audio"] is False
    assert "video" not in by_id["novideo"] and by_id["novideo"]["has_video"] is False
    batch = collate(samples)
    assert batch["video"].shape == (7, 3, 4, 48, 48) and batch["audio"].shape == (7, 100, 128)
    i_na, i_nv = batch["id"].index("noaudio"), batch["id"].index("novideo")
    assert not batch["has_audio"][i_na] and not batch["has_video"][i_nv]
    assert batch["audio"][i_na].abs().sum() == 0 and batch["video"][i_nv].abs().sum() == 0
    groups = {tuple(sorted(k for k in sub if k in ("video", "audio"))): idx.tolist()
              for idx, sub in split_by_presence(batch)}
    assert groups[("video",)] == [i_na] and groups[("audio",)] == [i_nv]
    assert sorted(sum(groups.values(), [])) == list(range(7))
    # a batch without any audio has no "audio" key (model contract: missing key = absent)
    only_video = collate([by_id["noaudio"], by_id["noaudio"]])
    assert "audio" not in only_video and only_video["has_audio"].tolist() == [False, False]
    # training draws are reproducible per (seed, epoch, index) and change with the epoch
    assert torch.equal(ds[0]["video"], ds[0]["video"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["video"], by_id[ds.rows[0].id]["video"])


def test_dataset_missing_files_and_bad_rows(corpus, small_cfg, tmp_path):
    labels = LabelMap.read(corpus.labels)
    rows = [Row("a", str(corpus.files["good_a"]), labels=["Dog"]), Row("m", str(tmp_path / "x.mp4"), labels=["Dog"])]
    with pytest.raises(FileNotFoundError, match="1 manifest row"):
        VideoDataset(rows, labels, small_cfg, train=True)
    ds = VideoDataset(rows, labels, small_cfg, train=True, missing="skip")
    assert len(ds) == 1 and [r.id for r in ds.missing] == ["m"]
    bad = VideoDataset([Row("z", str(corpus.files["random"]), labels=["Dog"])], labels, small_cfg, train=True)
    with pytest.raises(SampleError, match="row 'z'"):
        bad[0]


def test_dataset_in_a_dataloader(corpus, small_cfg):
    labels = LabelMap.read(corpus.labels, mode="multilabel")
    rows = read_manifest(corpus.good_manifest)[:4]
    ds = VideoDataset(rows, labels, small_cfg, train=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b["video"].shape for b in batches] == [(2, 6, 3, 4, 48, 48)] * 2
    assert sum(len(b["id"]) for b in batches) == 4


def test_batches_feed_a_model_per_presence_group(corpus):
    """Data -> model contract: a tiny MBT consumes collated batches, group by group."""
    from avfusion.models import build_model
    from avfusion.models.registry import get_model_config

    mcfg = get_model_config("mbt_tiny")
    cfg = ClipConfig.from_model(mcfg, eval_clips=1, eval_crops=1)
    model = build_model(mcfg).eval()
    ds = VideoDataset(read_manifest(corpus.good_manifest), LabelMap.read(corpus.labels), cfg, train=True, seed=0)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["video"].shape == (7, 3, *[mcfg.num_frames, *mcfg.image_size])
    assert batch["audio"].shape == (7, *mcfg.spec_size)
    logits = torch.full((7, mcfg.num_classes), float("nan"))
    with torch.no_grad():
        for idx, sub in split_by_presence(batch):
            logits[idx] = model({m: sub[m] for m in ("video", "audio") if m in sub}).logits
            assert sub["id"] == [batch["id"][i] for i in idx.tolist()]
            assert torch.equal(sub["label"], batch["label"][idx])
    assert torch.isfinite(logits).all()
