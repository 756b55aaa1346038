"""A small MBT release in scenic's layout for the zoo tests: its zoo entry (``tiny_cfg``), served by
``helpers.http_server`` (fixtures in tests/zoo/conftest.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from avfusion.zoo import PretrainedCfg
from avfusion.zoo.releases import MBT_AUDIOSET_PREPROCESS
from helpers.http_server import FileServer

NAME = "mbt_test_tiny_rgb-spec"
# A scenic-layout MBT small enough for a test, with AudioSet's 527 classes so the shipped names apply.
GEOMETRY = dict(hidden=24, heads=2, mlp=40, depth=2, patches=(4, 4, 2), rgb_thw=(4, 16, 16), spec_tf=(32, 16),
                classes=527)


@dataclass
class Release:
    cfg: PretrainedCfg
    data: bytes  # the checkpoint file's bytes
    server: FileServer

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def path(self) -> str:  # where the official base serves it
        return f"/official/{self.cfg.filename}"

    def gets(self) -> list[tuple[str, str | None]]:
        return list(self.server.requests)


def tiny_cfg(base_url: str, name: str = NAME, **kw: object) -> PretrainedCfg:
    pre = dict(MBT_AUDIOSET_PREPROCESS)
    pre.update(num_mel_bins=16, short_side=16)  # the small geometry's 16 mel bins and 16 x 16 crops
    return PretrainedCfg(
        name=name, dataset="synthetic (test)", modalities=("audio", "video"), map=0.0, fusion_layer=1,
        base_url=base_url, embed_dim=24, depth=2, num_heads=2, mlp_dim=40, tubelet=(2, 4, 4), spec_patch=(4, 4),
        num_bottlenecks=4, num_frames=4, image_size=(16, 16), spec_size=(32, 16), preprocess=tuple(pre.items()),
        **kw)  # type: ignore[arg-type]
