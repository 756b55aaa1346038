"""`avfusion pretrain`: Zorro's contrastive self-supervised training.

    avfusion pretrain CONFIG.yaml [key=value ...]
    avfusion pretrain --model zorro_vit_tiny --train MANIFEST --out DIR [--labels LABELS] [key=value ...]

InfoNCE between projected outputs, one projector per output type (audio, video, fusion),
temperature 0.08; the pairs are set by contrastive.pairs (default: audio-fusion, video-fusion,
audio-video). Labels are not used for the loss; a label map, when given, sizes the classifier
heads for the fine-tuning or linear probing that starts from the result
(`avfusion train --init-from DIR [linear_probe=true]`).

The model directory written at the end also keeps the projectors (projectors.safetensors +
projectors.json), so that `avfusion eval --model DIR --data VAL --retrieval` ranks audio -> video
and video -> audio in the space the loss trained.
"""

from __future__ import annotations

import sys

from avfusion.cli import train as train_cli


def main(argv: list[str] | None = None) -> int:
    return train_cli.main(argv, mode="contrastive", prog="avfusion pretrain")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
