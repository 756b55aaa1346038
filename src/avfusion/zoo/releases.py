"""The official MBT releases by name, and one resolver from a model spec to a model directory.

``resolve_model(spec)`` takes what ``--model`` takes everywhere: an avfusion model directory, a
release name (``list_pretrained()``: the six checkpoints of scenic's MBT model zoo) or
``hf-hub:ORG/NAME[@REVISION]`` (an avfusion model directory on the Hugging Face Hub).

A release is downloaded once (resumably, ``avfusion.utils.download``), its size and sha256
recorded, converted once by ``avfusion.convert.scenic_mbt`` with the entry's settings, and cached
as a model directory; every later use checks the cached files against what was recorded and needs
no network. Layout under ``$AVFUSION_HOME`` (default ``~/.cache/avfusion``)::

    checkpoints/<file>        the release as downloaded; <file>.json: its URL, size and sha256
    checkpoints/<file>.part   an unfinished download (resumed by the next try; never used as is)
    models/<name>/            model.safetensors + config.json + zoo.json (where it came from, and
                              the size / sha256 of the two files as written)

Environment: ``AVFUSION_HOME`` (the cache), ``AVFUSION_ZOO_URL`` (replaces the base URL: a mirror),
``AVFUSION_OFFLINE=1`` (nothing touches the network; a missing file is one line saying what to
download and where to put it), ``HF_HUB_OFFLINE`` / ``HF_HOME`` / ``HF_HUB_CACHE`` (hf-hub:).
docs/convert.md "Pretrained models" has the table, the preprocessing and where it comes from.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from avfusion.convert.scenic_mbt import ScenicMBTLayout, convert_scenic_mbt_with_notes, scenic_mbt_config
from avfusion.errors import ConfigError, InputError
from avfusion.core.config import ModelConfig, PreprocessConfig
from avfusion.convert.vit import init_from_vit
from avfusion.core.base import AVModel
from avfusion.models.pretrained import load_config, load_pretrained, save_pretrained
from avfusion.models.registry import build_model, list_models
from avfusion.models.registry import create_model as create_architecture
from avfusion.utils.download import (DownloadError, FileRecord, IntegrityError, check_file, download, file_lock,
                                     sha256_file)
from avfusion.utils.files import atomic_json

HF_HUB_PREFIX = "hf-hub:"
# scenic's model zoo table (scenic/projects/mbt/README.md): Google Cloud Storage's public host
ZOO_BASE_URL = "https://storage.googleapis.com/scenic-bucket/mbt"
# what a cached model directory was written by; another value is converted again from the download
ZOO_FORMAT = 1
_MODEL_FILES = ("model.safetensors", "config.json")
_HF_PATTERNS = ["*.json", "*.safetensors", "*.md"]

MBT_CITATION = """@InProceedings{nagrani2021mbt,
  title={Attention Bottlenecks for Multimodal Fusion},
  author={Nagrani, Arsha and Yang, Shan and Arnab, Anurag and Jansen, Aren and Schmid, Cordelia and Sun, Chen},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2021}
}"""
# The model zoo names no terms of its own for the checkpoints; the repository that publishes them is Apache-2.0.
MBT_LICENCE = "Apache-2.0 (google-research/scenic, which publishes the checkpoints; the model zoo names no other terms)"

# MBT's AudioSet preprocessing, from scenic projects/mbt/configs/audioset/balanced_audioset_base.py
# (the only AudioSet config released; docs/convert.md cites the lines): 32 frames at stride 2 from
# 25 fps video, short side 256, centre crop 224, frames in [-1, 1] (zero_centering); 8 x 100 log-mel
# frames of 128 bins, (x - 1.102) / 2.762. The fbank itself is unreleased (scenic: "Sec. 4.2 of the
# paper"): avfusion's Kaldi-convention fbank, 25 ms / 10 ms at 16 kHz (DESIGN.md section 4).
MBT_AUDIOSET_PREPROCESS: tuple[tuple[str, Any], ...] = (
    ("sample_rate", 16000), ("num_mel_bins", 128), ("frame_length_ms", 25.0), ("frame_shift_ms", 10.0),
    ("audio_norm", "mbt"),  # the preset owns its numbers: mean 1.102, std 2.762
    ("fps", 25.0), ("frame_stride", 2), ("video_norm", "scenic"), ("short_side", 256),
)


@dataclass(frozen=True)
class PretrainedCfg:
    """One released checkpoint: where it is, how it converts, what it expects and what it scored.

    The architecture fields are what the checkpoint's parameter shapes must show (checked after
    conversion); ``num_frames`` / ``image_size`` / ``spec_size`` / ``preprocess`` are the inputs it
    was trained on and travel in the converted model's config.json. ``sha256`` / ``size`` pin the
    file; left None, the first download's values are recorded and checked from then on."""

    name: str
    dataset: str
    modalities: tuple[str, ...]  # avfusion names: ("audio",) = Spec, ("video",) = RGB
    map: float  # AudioSet mAP (%) in scenic's model zoo table
    fusion_layer: int | None = 8  # scenic config.model.fusion_layer; None for one modality (never fuses)
    file: str = ""  # release file name under the base URL; "" = name
    base_url: str = ZOO_BASE_URL
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    tubelet: tuple[int, int, int] = (2, 16, 16)  # scenic patches.size [16, 16, 2] = (fh, fw, ft)
    spec_patch: tuple[int, int] = (16, 16)
    num_bottlenecks: int = 4  # scenic n_bottlenecks (the checkpoint holds one more: the token classifier's)
    num_classes: int = 527
    class_labels: str | None = "audioset"  # names shipped with the package
    num_frames: int = 32
    image_size: tuple[int, int] = (224, 224)
    spec_size: tuple[int, int] = (800, 128)
    preprocess: tuple[tuple[str, Any], ...] = MBT_AUDIOSET_PREPROCESS
    licence: str = MBT_LICENCE
    citation: str = MBT_CITATION
    sha256: str | None = None  # pin here once known (docs/convert.md "Integrity")
    size: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def filename(self) -> str:
        return self.file or self.name

    @property
    def url(self) -> str:
        """The URL the file is fetched from: ``AVFUSION_ZOO_URL`` replaces the base when set."""
        base = os.environ.get("AVFUSION_ZOO_URL") or self.base_url
        return f"{base.rstrip('/')}/{self.filename}"

    @property
    def pinned(self) -> FileRecord | None:
        return FileRecord(self.size, self.sha256) if self.size is not None and self.sha256 else None

    def class_names(self) -> list[str] | None:
        if self.class_labels is None:
            return None
        if self.class_labels != "audioset":
            raise ConfigError(f"pretrained model {self.name!r}: unknown class_labels {self.class_labels!r}")
        return audioset_class_names()

    def model_config(self) -> ModelConfig:
        """The avfusion config the converted release has (no download needed)."""
        ft, fh, fw = self.tubelet
        pt, pf = self.spec_patch
        video, audio = "video" in self.modalities, "audio" in self.modalities
        layout = ScenicMBTLayout(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
            tubelet=self.tubelet if video else None, spec_patch=self.spec_patch if audio else None,
            num_video_tokens=(self.num_frames // ft) * (self.image_size[0] // fh) * (self.image_size[1] // fw)
            if video else 0,
            num_audio_tokens=(self.spec_size[0] // pt) * (self.spec_size[1] // pf) if audio else 0,
            shared=False, bottleneck_tokens=self.num_bottlenecks + 1 if video and audio else None,
            num_classes=self.num_classes, modalities=self.modalities)
        cfg = scenic_mbt_config(layout, self.fusion_layer, self.num_frames, self.image_size, self.spec_size,
                                name=self.name, class_names=self.class_names())
        return cfg.replace(preprocess=PreprocessConfig(**dict(self.preprocess)))

    def describe(self) -> dict[str, Any]:
        """A row of ``avfusion models --pretrained``."""
        scheme = ("RGB+Spec, bottleneck fusion from layer " + str(self.fusion_layer)
                  if len(self.modalities) == 2 else ("Spec only" if self.modalities == ("audio",) else "RGB only"))
        return {"name": self.name, "inputs": scheme, "dataset": self.dataset, "mAP": self.map,
                "video": f"{self.num_frames}x{self.image_size[0]}x{self.image_size[1]}" if "video" in self.modalities
                else "", "audio": f"{self.spec_size[0]}x{self.spec_size[1]}" if "audio" in self.modalities else "",
                "classes": self.num_classes, "cached": is_cached(self.name), "url": self.url,
                "sha256": self.sha256, "licence": self.licence}


def _release(name: str, dataset: str, modalities: tuple[str, ...], map_: float) -> PretrainedCfg:
    return PretrainedCfg(name=name, dataset=dataset, modalities=modalities, map=map_,
                         fusion_layer=8 if len(modalities) == 2 else None)


_ZOO: dict[str, PretrainedCfg] = {}


def register_pretrained(cfg: PretrainedCfg, *, replace: bool = False) -> PretrainedCfg:
    """Add a release (tests add a small one served from a local server)."""
    if cfg.name in _ZOO and not replace:
        raise ValueError(f"pretrained model {cfg.name!r} is registered twice")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.name) or "/" in cfg.filename:
        raise ValueError(f"pretrained model name {cfg.name!r} / file {cfg.filename!r} must be a plain file name")
    _ZOO[cfg.name] = cfg
    return cfg


def unregister_pretrained(name: str) -> None:
    _ZOO.pop(name, None)


# scenic/projects/mbt/README.md, "Model Zoo" (mAP as listed there; all MBT-B/16x2, 32 frames).
for _release_args in [
    ("mbtb32_as-mini_spec", "AudioSet-mini", ("audio",), 30.9),
    ("mbtb32_as-mini_rgb", "AudioSet-mini", ("video",), 27.0),
    ("mbtb32_as-mini_rgb-spec", "AudioSet-mini", ("audio", "video"), 43.9),
    ("mbtb32_as-500k_spec", "AudioSet-500K", ("audio",), 44.0),
    ("mbtb32_as-500k_rgb", "AudioSet-500K", ("video",), 33.9),
    ("mbtb32_as-500k_rgb-spec", "AudioSet-500K", ("audio", "video"), 52.3),
]:
    register_pretrained(_release(*_release_args))
del _release_args


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Release names, in the model zoo's order; ``pattern`` is a shell-style filter."""
    import fnmatch

    return [n for n in _ZOO if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    if name not in _ZOO:
        close = difflib.get_close_matches(name, list(_ZOO), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown pretrained model {name!r}{hint} (`avfusion models --pretrained` lists them)")
    return _ZOO[name]


def is_pretrained_name(spec: Any) -> bool:
    return isinstance(spec, str) and spec in _ZOO


@functools.lru_cache(maxsize=1)
def _audioset_rows() -> tuple[tuple[int, str, str], ...]:
    text = resources.files("avfusion.zoo").joinpath("assets/audioset_class_labels_indices.csv").read_text("utf-8")
    rows = [(int(r["index"]), r["mid"], r["display_name"]) for r in csv.DictReader(io.StringIO(text))]
    assert [r[0] for r in rows] == list(range(527)), "the shipped AudioSet class list is damaged"
    return tuple(rows)


def audioset_class_names() -> list[str]:
    """AudioSet's 527 display names in output order (class_labels_indices.csv; AudioSet ontology,
    CC BY 4.0: avfusion/zoo/assets/ATTRIBUTION.md)."""
    return [r[2] for r in _audioset_rows()]


def audioset_labels_path() -> Path:
    """The shipped ``class_labels_indices.csv`` (``index,mid,display_name``), e.g. for ``--labels``."""
    with resources.as_file(resources.files("avfusion.zoo").joinpath(
            "assets/audioset_class_labels_indices.csv")) as p:
        return Path(p)


# -- environment ----------------------------------------------------------------------------------
def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={os.environ[name]!r}: use 1 (or true / yes / on) or 0")


def offline() -> bool:
    """AVFUSION_OFFLINE=1: nothing touches the network."""
    return _env_flag("AVFUSION_OFFLINE")


def home() -> Path:
    """The cache: ``$AVFUSION_HOME``, default ``~/.cache/avfusion``."""
    value = os.environ.get("AVFUSION_HOME")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "avfusion"


def _paths(cfg: PretrainedCfg) -> tuple[Path, Path, Path]:
    """(downloaded checkpoint, its record, converted model directory)."""
    root = home()
    ckpt = root / "checkpoints" / cfg.filename
    return ckpt, ckpt.with_name(ckpt.name + ".json"), root / "models" / cfg.name


def is_cached(name: str) -> bool:
    return (_paths(get_pretrained_cfg(name))[2] / "zoo.json").is_file()


# -- resolving ------------------------------------------------------------------------------------
def resolve_model(spec: str | os.PathLike, *, progress: bool = True) -> Path:
    """The model directory ``spec`` names: a directory as is, a release name downloaded / converted /
    cached as needed, ``hf-hub:ORG/NAME[@REV]`` through huggingface_hub's cache."""
    if not isinstance(spec, str) or Path(spec).is_dir():
        return Path(spec)
    if spec.startswith(HF_HUB_PREFIX):
        return _resolve_hf_hub(spec)
    if spec in _ZOO:
        return ensure_pretrained(spec, progress=progress)
    hint = ""
    if os.sep not in spec and "/" not in spec and not spec.startswith("."):  # reads as a name, not a path
        close = difflib.get_close_matches(spec, list(_ZOO), n=2)
        hint = (f", and no pretrained model of that name ({'did you mean ' + ', '.join(close) + '? ' if close else ''}"
                "`avfusion models --pretrained` lists them)")
    raise InputError(f"no model directory {spec!r}{hint}")


def resolve_config(spec: str | os.PathLike) -> ModelConfig:
    """The config of what ``spec`` names, downloading as little as possible (a release's is known
    without its weights; hf-hub: fetches config.json only)."""
    if isinstance(spec, str) and spec in _ZOO and not Path(spec).is_dir():
        return get_pretrained_cfg(spec).model_config()
    if isinstance(spec, str) and spec.startswith(HF_HUB_PREFIX):
        return load_config(_resolve_hf_hub(spec, files=["config.json"]))
    return load_config(resolve_model(spec))


def load_pretrained_model(spec: str | os.PathLike, map_location: Any = "cpu", **overrides: Any) -> Any:
    """``load_pretrained(resolve_model(spec))``: the model in eval mode."""
    return load_pretrained(resolve_model(spec), map_location=map_location, **overrides)


def create_model(name: str, *, pretrained: bool = False, pretrained_backbone: str | os.PathLike | None = None,
                 **overrides: Any) -> AVModel:
    """``avfusion.create_model``: an architecture by name (``avfusion.models.create_model``), or released weights.

    ``create_model('mbtb32_as-500k_rgb-spec', pretrained=True)``: an official MBT release by name
    (``list_pretrained()``), downloaded, converted and cached once; ``create_model('hf-hub:ORG/NAME')``:
    an avfusion model directory on the Hugging Face Hub. Both come in eval mode; ``overrides`` must
    then keep parameter shapes (``model.reset_classifier(n)`` gives a new head). A release name
    without ``pretrained=True`` builds its architecture with random weights.
    """
    if pretrained or name.startswith(HF_HUB_PREFIX):
        if name in list_models():
            raise ConfigError(f"no pretrained weights for architecture {name!r}: `avfusion models --pretrained` "
                              "lists the releases (or pass pretrained_backbone=PATH for ImageNet ViT weights)")
        if pretrained_backbone is not None:
            raise ConfigError("pretrained=True and pretrained_backbone cannot be combined")
        return load_pretrained_model(name, **overrides)
    if is_pretrained_name(name):
        cfg = get_pretrained_cfg(name).model_config()
        model = build_model(cfg.replace(**overrides) if overrides else cfg)
        if pretrained_backbone is not None:
            init_from_vit(model, pretrained_backbone)
        return model
    return create_architecture(name, pretrained_backbone=pretrained_backbone, **overrides)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"avfusion: {msg}", file=sys.stderr, flush=True)


def ensure_pretrained(name: str, *, progress: bool = True) -> Path:
    """The cached model directory of release ``name``: checked if there, else made (download as
    needed, record, convert, atomic rename). One process at a time per release."""
    cfg = get_pretrained_cfg(name)
    ckpt, record_path, model_dir = _paths(cfg)
    with file_lock(home() / "locks" / f"{cfg.name}.lock"):
        if (model_dir / "zoo.json").is_file():
            info = _read_json(model_dir / "zoo.json")
            if info.get("format") == ZOO_FORMAT:
                _check_model_dir(model_dir, info)
                return model_dir
        record = _checkpoint(cfg, ckpt, record_path, progress)
        _say(progress, f"converting {ckpt} -> {model_dir}")
        _convert(cfg, ckpt, record, model_dir)
        return model_dir


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable ({e}); delete it (the cache entry is made again)") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a JSON object; delete it (the cache entry is made again)")
    return value


def _check_model_dir(model_dir: Path, info: dict[str, Any]) -> None:
    files = info.get("files") or {}
    for fname in _MODEL_FILES:
        rec = files.get(fname) or {}
        if not isinstance(rec.get("size"), int) or not isinstance(rec.get("sha256"), str):
            raise InputError(f"{model_dir / 'zoo.json'} records no size / sha256 for {fname}; delete {model_dir} "
                             "to convert the release again")
        check_file(model_dir / fname, FileRecord(rec["size"], rec["sha256"]),
                   fix=f"delete {model_dir} to convert the release again")


def _checkpoint(cfg: PretrainedCfg, ckpt: Path, record_path: Path, progress: bool) -> FileRecord:
    """The downloaded release, checked against its record (the pin, else the first download's)."""
    if ckpt.is_file():
        if record_path.is_file():
            rec = _read_json(record_path)
            try:
                record = FileRecord(int(rec["size"]), str(rec["sha256"]))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{record_path}: no size / sha256 in it; delete it and {ckpt} to download "
                                 "again") from None
            if cfg.pinned is not None and record != cfg.pinned:
                raise IntegrityError(f"{ckpt} was recorded with sha256 {record.sha256} but release {cfg.name} is "
                                     f"pinned to {cfg.pinned.sha256}; delete it to download it again")
            check_file(ckpt, record, fix="delete it to download it again")
            return record
        # Put there by hand (an offline machine): the pin decides, else this is the first sight of it.
        record = cfg.pinned or FileRecord(ckpt.stat().st_size, sha256_file(ckpt))
        check_file(ckpt, record, fix="delete it and put the release's file there")
        _write_record(cfg, record_path, record, source=str(ckpt))
        return record
    url = cfg.url
    if offline():
        raise FileNotFoundError(f"AVFUSION_OFFLINE=1 and {cfg.name} is not cached: download {url} and put it "
                                f"at {ckpt}")
    _say(progress, f"downloading {url} -> {ckpt}")
    record = download(url, ckpt, expected=cfg.pinned, progress=progress)
    _write_record(cfg, record_path, record, source=url)
    return record


def _write_record(cfg: PretrainedCfg, record_path: Path, record: FileRecord, source: str) -> None:
    atomic_json(record_path, {"name": cfg.name, "source": source, "size": record.size, "sha256": record.sha256,
                              "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _convert(cfg: PretrainedCfg, ckpt: Path, record: FileRecord, model_dir: Path) -> None:
    """Convert the checked release into a temporary directory, check it is the release's model,
    then rename it into place (a reader never sees half a model directory)."""
    expected = cfg.model_config()
    model, notes = convert_scenic_mbt_with_notes(
        ckpt, cfg.fusion_layer, num_frames=cfg.num_frames, image_size=cfg.image_size, spec_size=cfg.spec_size,
        name=cfg.name, class_names=expected.class_names)
    model.cfg = model.cfg.replace(preprocess=expected.preprocess)
    got, want = model.cfg.to_dict(), expected.to_dict()
    diff = [f"{k} {got.get(k)!r} (expected {want.get(k)!r})" for k in want if got.get(k) != want.get(k)]
    if diff:
        raise InputError(f"{ckpt} does not hold release {cfg.name}'s model: {', '.join(diff[:4])}; delete it to "
                         "download it again")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_dir.with_name(f".{model_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(model, tmp, metadata={"source": "scenic-mbt", "release": cfg.name, "checkpoint_sha256":
                                              record.sha256})
        files = {f: {"size": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)} for f in _MODEL_FILES}
        atomic_json(tmp / "zoo.json", {
            "format": ZOO_FORMAT, "name": cfg.name, "url": cfg.url, "file": cfg.filename,
            "checkpoint": {"size": record.size, "sha256": record.sha256}, "files": files,
            "fusion_layer": cfg.fusion_layer, "dataset": cfg.dataset, "mAP": cfg.map, "licence": cfg.licence,
            "citation": cfg.citation, "notes": notes})
        if model_dir.exists():  # an older format's directory
            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the Hugging Face Hub --------------------------------------------------------------------------
def _hf_cache_dir() -> str | None:
    """huggingface_hub reads its environment once, at import; read it at each call instead."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _resolve_hf_hub(spec: str, files: list[str] | None = None) -> Path:
    repo = spec[len(HF_HUB_PREFIX):]
    repo, _, revision = repo.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ConfigError(f"{spec!r}: expected hf-hub:ORG/NAME (or hf-hub:ORG/NAME@REVISION)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import utils as hf_utils
    except ImportError:
        raise ConfigError(f"{spec}: loading from the Hugging Face Hub needs the huggingface_hub package "
                          "(pip install huggingface_hub)") from None
    local_only = offline() or _env_flag("HF_HUB_OFFLINE")
    try:
        path = Path(snapshot_download(repo, revision=revision or None, cache_dir=_hf_cache_dir(),
                                      local_files_only=local_only, allow_patterns=files or _HF_PATTERNS))
    except hf_utils.LocalEntryNotFoundError:
        which = ("AVFUSION_OFFLINE=1" if offline() else
                 "HF_HUB_OFFLINE=1" if local_only else "the network is unreachable")
        cache = _hf_cache_dir() or "the default Hugging Face cache"
        raise FileNotFoundError(f"{spec} is not in {cache} and {which}: fetch it on a connected machine "
                                f"(huggingface-cli download {repo}) and copy the cache over") from None
    except (hf_utils.RepositoryNotFoundError, hf_utils.RevisionNotFoundError) as e:
        raise ConfigError(f"{spec}: {str(e).splitlines()[0]}") from None
    except hf_utils.HfHubHTTPError as e:
        raise DownloadError(f"{spec}: {str(e).splitlines()[0]}") from None
    missing = [f for f in (files or _MODEL_FILES) if not (path / f).is_file()]
    if missing:
        raise InputError(f"{spec} is not an avfusion model directory: no {', '.join(missing)} in {path}")
    return path


__all__ = ["HF_HUB_PREFIX", "PretrainedCfg", "ZOO_BASE_URL", "audioset_class_names", "audioset_labels_path",
           "ensure_pretrained", "get_pretrained_cfg", "home", "is_cached", "is_pretrained_name", "list_pretrained",
           "load_pretrained_model", "offline", "register_pretrained", "resolve_config", "resolve_model",
           "unregister_pretrained"]
