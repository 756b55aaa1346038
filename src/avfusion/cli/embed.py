"""`avfusion embed --data SOURCE --model DIR --out emb.npz [--clips N] [--batch-size B] [--workers W]
[--chunk-size R]`: the model's pooled features of every row of a corpus.

SOURCE (or --manifest / --shards) is a manifest, a folder of shards, a .tar, a brace pattern, a ::
list or a pipe: / http URL. OUT holds `ids` (N,), one (N, D) float32 array per output the model
has in ModelOutput.features (Zorro: audio, video, fusion, global; MBT: audio and video, each
modality's CLS token), each row's clips averaged (NaN where a row lacks that output), and
`failed_ids` / `failed_reasons` for the rows that could not be used (also counted on stderr).

Resumable: rerun the same command after a kill; finished chunks of --chunk-size rows in
OUT.parts/ are kept, and a complete OUT is left as it is. Under `torchrun --nproc_per_node N -m
avfusion embed ...` each rank embeds its part and rank 0 writes OUT. See docs/evaluation.md.

--precision fp32 | bf16 | int8 and --compile: faster CPU inference (docs/evaluation.md "Fast CPU
inference"); the precision is recorded in OUT's meta.
"""

from __future__ import annotations

import argparse

from avfusion.cli._common import parse_args
from avfusion.cli.predict import (MODEL_HELP, add_corpus_args, add_inference_args, corpus_device, load_for_inference,
                                  report)
from avfusion.utils.cli_args import device_arg, int_at_least


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion embed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--clips", type=int_at_least(1), default=4, help="clips averaged per row (default 4)")
    p.add_argument("--chunk-size", type=int_at_least(1), default=256,
                   help="rows per part file: what a killed run can lose at most (default 256)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (default: the GPU when there is one) | cpu | cuda | cuda:N")
    add_corpus_args(p, "the .npz file to write (resumed if a run was cut short)")
    add_inference_args(p)
    args = parse_args(p, argv)
    if args.data is None:
        p.error("the following arguments are required: --data (or --manifest / --shards)")
    if args.out is None:
        p.error("the following arguments are required: --out")

    from avfusion.data.sources import resolve
    from avfusion.infer.embed import embed_corpus
    from avfusion.utils.distributed import cleanup

    source = resolve(args.data, args.allow_partial)
    device, info = corpus_device(args.device)
    try:
        model = load_for_inference(args.model, device, args)
        summary = embed_corpus(model, source, args.out, args.clips, args.batch_size, args.workers, args.chunk_size,
                               info, progress=not args.no_progress)
        report(summary, "embed", info)
    finally:
        cleanup(info)
    return 0
