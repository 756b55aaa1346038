"""Released weights by name (avfusion.zoo): download from a local server, convert once, cache, then
offline; mirrors; integrity; hf-hub:; the shipped AudioSet class names; --model NAME in the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import avfusion
from avfusion.cli import main
from avfusion.convert import convert_scenic_mbt
from avfusion.errors import ConfigError, InputError
from avfusion.train.config import TrainConfig
from avfusion.train.run import run_training
from avfusion.utils.download import DownloadError, IntegrityError
from avfusion.zoo import (audioset_class_names, audioset_labels_path, get_pretrained_cfg, home, list_pretrained,
                          register_pretrained, resolve_config, resolve_model, unregister_pretrained)
from helpers.zoo_release import NAME, Release, tiny_cfg

OFFICIAL = ["mbtb32_as-mini_spec", "mbtb32_as-mini_rgb", "mbtb32_as-mini_rgb-spec",
            "mbtb32_as-500k_spec", "mbtb32_as-500k_rgb", "mbtb32_as-500k_rgb-spec"]


def _inputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    c = model.cfg
    g = torch.Generator().manual_seed(1)
    return {"video": torch.rand(2, 3, c.num_frames, *c.image_size, generator=g) * 2 - 1,
            "audio": torch.randn(2, *c.spec_size, generator=g)}


def _cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- the six official releases -------------------------------------------------------------------
def test_the_six_official_releases() -> None:
    assert [n for n in list_pretrained() if n in OFFICIAL] == OFFICIAL
    maps = {"mbtb32_as-mini_spec": 30.9, "mbtb32_as-mini_rgb": 27.0, "mbtb32_as-mini_rgb-spec": 43.9,
            "mbtb32_as-500k_spec": 44.0, "mbtb32_as-500k_rgb": 33.9, "mbtb32_as-500k_rgb-spec": 52.3}
    for name in OFFICIAL:
        cfg = get_pretrained_cfg(name)
        assert cfg.url == f"https://storage.googleapis.com/scenic-bucket/mbt/{name}"
        assert cfg.map == maps[name] and "nagrani2021mbt" in cfg.citation and cfg.licence
        mc = cfg.model_config()  # known without the weights: what the conversion must give
        assert mc.name == name and mc.num_classes == 527 and mc.class_names[:1] == ["Speech"]
        assert (mc.embed_dim, mc.depth, mc.num_heads, mc.tubelet) == (768, 12, 12, (2, 16, 16))
        p = mc.preprocess
        assert (mc.num_frames, p.fps, p.frame_stride, p.short_side, mc.image_size) == (32, 25.0, 2, 256, (224, 224))
        assert (mc.spec_size, p.audio_norm, p.audio_stats(), p.video_norm) == ((800, 128), "mbt", (1.102, 2.762), "scenic")
        if name.endswith("rgb-spec"):
            assert mc.modalities == ("audio", "video") and mc.fusion_layer == 8 and mc.fusion == "bottleneck"
        else:
            assert mc.modalities == (("audio",) if name.endswith("_spec") else ("video",))


def test_models_pretrained_lists_them(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in OFFICIAL) and "52.3" in out and "AVFUSION_HOME" in out
    assert main(["models", "--pretrained", "*500k*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == OFFICIAL[3:] and rows[0]["cached"] is False


def test_audioset_class_names_ship_with_the_package() -> None:
    path = audioset_labels_path()
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == 527 and [int(r["index"]) for r in rows] == list(range(527))
    assert rows[0]["display_name"] == "Speech" and rows[137]["display_name"] == "Music"
    assert len({r["mid"] for r in rows}) == 527
    assert audioset_class_names() == [r["display_name"] for r in rows]
    attribution = (path.parent / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "ontology" in attribution


# -- download, convert, cache, offline -------------------------------------------------------------
def test_first_use_downloads_converts_and_caches_then_works_offline(release: Release, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = resolve_model(NAME)
    assert model_dir == home() / "models" / NAME
    assert release.gets() == [(release.path, None)]
    record = json.loads((home() / "checkpoints" / f"{NAME}.json").read_text())
    assert record["size"] == len(release.data) and record["sha256"] == release.sha256
    info = json.loads((model_dir / "zoo.json").read_text())
    assert info["checkpoint"]["sha256"] == release.sha256 and set(info["files"]) == {"model.safetensors", "config.json"}
    assert not list(home().rglob("*.part")) and not list((home() / "models").glob(".*"))

    # the cached model is the converter's output of that file, with the release's names and preprocessing
    ckpt = tmp_path / "ckpt.msgpack"
    ckpt.write_bytes(release.data)
    reference = convert_scenic_mbt(ckpt, 1, num_frames=4, image_size=(16, 16), spec_size=(32, 16))
    model = avfusion.create_model(NAME, pretrained=True)
    assert not model.training and model.cfg.class_names == audioset_class_names()
    assert model.cfg.preprocess.num_mel_bins == 16 and model.cfg.fusion_layer == 1
    x = _inputs(model)
    torch.testing.assert_close(model(x).logits, reference(x).logits, rtol=0, atol=0)

    # later uses: no request at all, also with the network forbidden and the server gone
    release.server.files.clear()
    monkeypatch.setenv("AVFUSION_OFFLINE", "1")
    assert resolve_model(NAME) == model_dir
    assert avfusion.create_model(NAME, pretrained=True).cfg.name == NAME
    assert len(release.gets()) == 1


def test_a_mirror_replaces_the_base_url(release: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    release.server.files.pop(release.path)  # the official host is unreachable: only the mirror has it
    release.server.files[f"/mirror/sub/{NAME}"] = release.data
    monkeypatch.setenv("AVFUSION_ZOO_URL", release.server.url("/mirror/sub/"))
    assert get_pretrained_cfg(NAME).url == release.server.url(f"/mirror/sub/{NAME}")
    model_dir = resolve_model(NAME)
    assert (model_dir / "model.safetensors").is_file()
    assert release.gets() == [(f"/mirror/sub/{NAME}", None)]


def test_offline_with_an_empty_cache_says_what_to_download_and_where(release: Release, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("AVFUSION_OFFLINE", "1")
    assert main(["predict", "clip.mp4", "--model", NAME]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "AVFUSION_OFFLINE=1" in err[0]
    assert release.server.url(release.path) in err[0] and str(home() / "checkpoints" / NAME) in err[0]
    assert release.gets() == []

    # putting the file there (an air-gapped machine) is enough: recorded, converted, no request
    (home() / "checkpoints").mkdir(parents=True)
    (home() / "checkpoints" / NAME).write_bytes(release.data)
    assert (resolve_model(NAME) / "model.safetensors").is_file()
    assert json.loads((home() / "checkpoints" / f"{NAME}.json").read_text())["sha256"] == release.sha256
    assert release.gets() == []


def test_an_interrupted_download_is_refused_leaves_nothing_cached_and_resumes(release: Release) -> None:
    half = len(release.data) // 2
    release.server.truncate_at = half
    with pytest.raises(DownloadError, match=f"stopped at {half:,} of {len(release.data):,} bytes"):
        resolve_model(NAME)
    # nothing usable: no checkpoint, no record, no model directory; only the part to resume
    files = _cache_files(home())
    assert f"checkpoints/{NAME}" not in files and f"checkpoints/{NAME}.json" not in files
    assert not (home() / "models" / NAME).exists()
    assert (home() / "checkpoints" / f"{NAME}.part").stat().st_size == half

    release.server.truncate_at = None
    model_dir = resolve_model(NAME)
    assert release.gets()[-1] == (release.path, f"bytes={half}-")  # resumed, not restarted
    record = json.loads((home() / "checkpoints" / f"{NAME}.json").read_text())
    assert record["sha256"] == release.sha256 and (model_dir / "zoo.json").is_file()


def test_a_file_that_is_not_the_pinned_one_is_refused_and_not_kept(server, checkpoint_bytes: bytes) -> None:
    cfg = register_pretrained(tiny_cfg(server.url("/official"), name="mbt_test_pinned", size=len(checkpoint_bytes),
                                       sha256="0" * 64), replace=True)
    try:
        server.files["/official/mbt_test_pinned"] = checkpoint_bytes
        with pytest.raises(IntegrityError, match="not the expected file"):
            resolve_model(cfg.name)
        assert [f for f in _cache_files(home()) if not f.startswith("locks/") and not f.endswith(".lock")] == []
    finally:
        unregister_pretrained(cfg.name)


def test_a_changed_cached_model_is_refused_naming_it(release: Release, capsys: pytest.CaptureFixture) -> None:
    weights = resolve_model(NAME) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # same size, other content
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        resolve_model(NAME)
    capsys.readouterr()  # the first use's "downloading" / "converting" lines
    assert main(["export", "--model", NAME, "--out", "x.pt2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(weights) in err[0] and "changed" in err[0]
    assert len(release.gets()) == 1


def test_a_truncated_download_in_the_cache_is_never_converted(release: Release) -> None:
    model_dir = resolve_model(NAME)
    ckpt = home() / "checkpoints" / NAME
    ckpt.write_bytes(release.data[:-100])
    import shutil

    shutil.rmtree(model_dir)  # so the next use would convert from the (now truncated) download
    with pytest.raises(IntegrityError, match="truncated") as e:
        resolve_model(NAME)
    assert str(ckpt) in str(e.value)
    assert not model_dir.exists()


def test_a_file_that_is_not_the_release_is_refused(release: Release) -> None:
    from helpers.scenic_mbt_reference import random_mbt_params, to_flax_msgpack, train_state

    other = random_mbt_params(np.random.default_rng(3), hidden=24, heads=2, mlp=40, depth=3, patches=(4, 4, 2),
                              rgb_thw=(4, 16, 16), spec_tf=(32, 16), classes=527)
    release.server.files[release.path] = to_flax_msgpack(train_state(other))
    with pytest.raises(InputError, match="does not hold release .*depth 3 \\(expected 2\\)"):
        resolve_model(NAME)
    assert not (home() / "models" / NAME).exists()


# -- names, errors, configs --------------------------------------------------------------------------
def test_unknown_names_and_architectures(release: Release) -> None:
    with pytest.raises(InputError, match="no pretrained model of that name.*did you mean mbtb32_as-500k_rgb-spec"):
        resolve_model("mbtb32_as-500k_rgb_spec")
    with pytest.raises(ConfigError, match="no pretrained weights for architecture 'mbt_base'"):
        avfusion.create_model("mbt_base", pretrained=True)
    with pytest.raises(ConfigError, match="unknown model .*avfusion models --pretrained"):
        avfusion.get_model_config("mbtb32_as-mini_spec")  # the registry holds architectures only
    with pytest.raises(ConfigError, match="is a pretrained model.*init_from"):
        run_training(TrainConfig(model="mbtb32_as-mini_spec"))
    # without pretrained=True a release name is its architecture, randomly initialised (nothing fetched)
    model = avfusion.create_model(NAME)
    assert model.cfg.depth == 2 and release.gets() == []
    # validate / prepare take the clip geometry from a release without downloading it
    assert resolve_config(NAME).num_frames == 4 and release.gets() == []


def test_bad_offline_value_is_one_line(release: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVFUSION_OFFLINE", "maybe")
    with pytest.raises(ConfigError, match="AVFUSION_OFFLINE='maybe'"):
        resolve_model(NAME)


# -- the command line and fine-tuning ---------------------------------------------------------------
def test_predict_with_a_release_prints_audioset_labels(release: Release, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    from helpers.media import make_media

    clip = make_media(tmp_path / "clip.mp4", duration=1.0, size=(32, 32))
    assert main(["predict", str(clip), "--model", NAME, "--top-k", "3", "--clips", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = set(audioset_class_names())
    labels = [e["label"] for out in res["outputs"].values() for e in out]
    assert labels and all(label in names for label in labels)


def test_fine_tuning_from_a_release_gets_a_new_head(release: Release, tmp_path: Path) -> None:
    from avfusion.data.manifest import LabelMap
    from avfusion.train.run import model_for_run

    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("index,mid,display_name\n0,/m/a,dog\n1,/m/b,cat\n2,/m/c,car\n")
    labels = LabelMap.read(str(labels_csv))
    # a recipe's num_classes (configs/mbt_vggsound.yaml) does not block loading: the label map sizes the head
    cfg = TrainConfig(init_from=NAME, model_overrides={"num_classes": 3, "drop_path_rate": 0.1})
    model = model_for_run(cfg, labels, "multilabel")
    assert model.cfg.drop_path_rate == 0.1
    assert model.cfg.num_classes == 3 and model.cfg.class_names == ["dog", "cat", "car"]
    released = avfusion.load_pretrained(resolve_model(NAME))
    own, ref = model.state_dict(), released.state_dict()
    assert own["head.weight"].shape == (3, 24) and not own["head.weight"].any()  # re-initialised (zeros, scenic)
    assert all(torch.equal(own[k], ref[k]) for k in ref if not k.startswith("head."))


# -- the Hugging Face Hub -------------------------------------------------------------------------
def _fill_hf_cache(cache: Path, repo: str, model_dir: Path, revision: str = "a" * 40) -> None:
    """What huggingface_hub leaves after a download: refs/main -> a commit, the files in its snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snap = folder / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (snap / f).write_bytes((model_dir / f).read_bytes())


def test_hf_hub_loads_from_a_filled_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("huggingface_hub")
    model = avfusion.create_model("mbt_tiny", num_classes=3)
    local = avfusion.save_pretrained(model, tmp_path / "local")
    cache = tmp_path / "hf" / "hub"
    _fill_hf_cache(cache, "someorg/mbt-tiny-test", local)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    loaded = avfusion.create_model("hf-hub:someorg/mbt-tiny-test")
    assert loaded.cfg.to_dict() == model.cfg.to_dict()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert str(resolve_model("hf-hub:someorg/mbt-tiny-test")).startswith(str(cache))

    # not in the cache, offline: one line naming the repository
    assert main(["export", "--model", "hf-hub:someorg/absent", "--out", str(tmp_path / "x.pt2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hf-hub:someorg/absent" in err[0] and "HF_HUB_OFFLINE=1" in err[0]
    with pytest.raises(ConfigError, match="expected hf-hub:ORG/NAME"):
        resolve_model("hf-hub:no-slash")
