"""`avfusion prepare MANIFEST --labels LABELS --out DIR [--json]`: decode once into .tar shards.

Each row is checked by the same function as `avfusion validate` (rows it calls an error are
recorded as failures with the same reason, malformed manifest lines with their line number), and
its segment is decoded once (frames on the --fps grid, short side --short-side, as H.264
or JPEG (--video-format);
audio 16 kHz mono int16) into WebDataset shards `DIR/shard-NNNNNN.tar`. A failing row never stops
the run: it is recorded with its reason in the summary and in DIR/prepare.json. Exit status 0
when the run finished (check "failed"), 2 when the manifest or label map cannot be read.

Parallel and resumable: shard i holds manifest rows [i*S, (i+1)*S), so --workers N processes,
or N scheduler jobs with --part K/N into the same --out, write the same shards; running the same
command again skips the shards already done and redoes the rest (after a kill)."""

from __future__ import annotations

import argparse
import json
import sys

from avfusion.cli._common import parse_args
from avfusion.cli._data_args import add_common, clip_config
from avfusion.data.manifest import LabelMap, check_manifest
from avfusion.data.prepare import parse_part, write_shards
from avfusion.errors import ConfigError
from avfusion.utils.cli_args import int_at_least


def _part(text: str) -> tuple[int, int]:
    try:
        return parse_part(text)
    except ConfigError as e:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--part {text!r}: ")) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--shard-size", type=int_at_least(1), default=256,
                   help="manifest rows per shard (shard i holds rows [i*S, (i+1)*S) that decode)")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="processes writing shards at once (the same shards whatever the number)")
    p.add_argument("--part", type=_part, default=(0, 1), metavar="K/N",
                   help="write only shards i with i %% N == K (one of N jobs of a scheduler; same --out)")
    p.add_argument("--video-format", choices=["h264", "jpeg"], default="h264",
                   help="h264 (default): compact; jpeg: per-frame JPEG, ~10%% faster to read, 7-13x larger")
    a = parse_args(p, argv)
    labels = LabelMap.read(a.labels, a.task)
    rows, bad_lines = check_manifest(a.manifest)
    res = write_shards(rows, labels, clip_config(a), a.out, max_count=a.shard_size, video_format=a.video_format,
                       bad_lines=bad_lines, workers=a.workers, part=a.part, progress=not a.no_progress)
    if a.json:
        print(json.dumps(res.to_dict(), indent=1, allow_nan=False))
        return 0
    if res.skipped:
        print(f"{res.skipped} shard(s) of this part were already done (resumed)")
    state = "complete" if res.complete else f"{res.done} of {res.total} shards done (other parts to come)"
    print(f"{res.ok} rows written to {len(res.shards)} shard(s) in {a.out}; {res.failed} failed; {state}")
    for f in res.failures:
        print(f"  {f['id'] or 'line ' + str(f['line'])}: {f['reason']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
