"""Where data comes from: one string (or list) names a *source*, for every command that reads data
(train, pretrain, eval, predict, embed).

A source is either
- a manifest: a ``.csv`` / ``.jsonl`` file of rows (files decoded on the fly), or
- shards written by ``avfusion prepare``, given as
  - the folder prepare wrote (its ``shard-*.tar``, and its ``labels.csv`` / ``prepare.json``),
  - one ``.tar`` file,
  - a brace pattern (``shards/shard-{000000..000127}.tar``),
  - a list: a Python list, or URLs joined with ``::``,
  - any URL that webdataset's ``gopen`` opens: ``pipe:aws s3 cp s3://bucket/shard-000001.tar -``,
    ``pipe:cat ...``, ``http(s)://...`` (read through ``curl``), with brace patterns inside.

Brace expansion and ``::`` lists are webdataset's own (``shardlists.expand_urls``), and so is
opening a URL (``gopen``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from webdataset.shardlists import expand_urls

from avfusion.errors import ConfigError, InputError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json")
URL_PREFIXES = ("pipe:", "http://", "https://", "file:", "gs://", "s3://", "ais://")
LABELS_NAME = "labels.csv"
PREPARE_NAME = "prepare.json"


@dataclass
class Source:
    """A resolved data source: a manifest, or a list of shard URLs (with what prepare left beside
    them, when they are a local folder)."""

    spec: str
    manifest: Path | None = None
    shards: list[str] = field(default_factory=list)
    labels: Path | None = None  # the label map prepare wrote beside the shards
    prepared: dict[str, Any] | None = None  # prepare.json: settings and counts of the preparation
    index: Any = field(default=None, repr=False)  # local shards' sample index (shards.shard_index), built once

    @property
    def local(self) -> bool:
        """Shards that are all local files (random access possible)."""
        return self.is_shards and all(os.path.isfile(u) for u in self.shards)

    @property
    def is_shards(self) -> bool:
        return self.manifest is None

    def describe(self) -> str:
        if self.manifest is not None:
            return f"manifest {self.manifest}"
        return f"{len(self.shards)} shard(s) from {self.spec}"


def _is_url(s: str) -> bool:
    return s.startswith(URL_PREFIXES) or "::" in s or ("{" in s and ".." in s)


# The one spelling of "use what a partial or unfinished shard folder holds": this keyword, the
# `--allow-partial` flag of every command that reads data, and the `data.allow_partial` setting.
ALLOW_PARTIAL_HINT = "--allow-partial (data.allow_partial=true)"
DONE_DIR = ".done"  # prepare's record of finished shards (avfusion.data.prepare)


def _incomplete(folder: Path, prepared: dict[str, Any] | None, found: list[str]) -> str | None:
    """What a shard folder written by prepare lacks, or None when it is whole: shards prepare
    recorded that are not there, or a prepare that has not finished (killed, or parts still to
    run). A folder prepare never wrote into (no prepare.json, no .done/) is taken as it is."""
    done_dir = folder / DONE_DIR
    names = {os.path.basename(x) for x in found}
    if prepared is None:
        if not done_dir.is_dir():
            return None
        recorded = len(list(done_dir.glob("shard-*.json")))
        return f"prepare has not finished ({recorded} shard(s) recorded, no prepare.json)"
    written = [os.path.basename(str(x)) for x in prepared.get("shards") or []]
    gone = [n for n in written if n not in names]
    if gone:
        shown = ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else "")
        return f"{len(gone)} of the {len(written)} shard(s) prepare wrote are missing ({shown})"
    if prepared.get("complete") is False:
        total = int(prepared.get("shards_total") or 0)
        todo = [f"shard-{i:06d}" for i in range(total) if not (done_dir / f"shard-{i:06d}.json").is_file()]
        shown = ", ".join(todo[:5]) + (" ..." if len(todo) > 5 else "")
        return (f"prepare has finished {prepared.get('shards_done')} of {total} shard(s)"
                + (f" (not done: {shown})" if todo else ""))
    return None


def resolve(spec: str | os.PathLike | Sequence[str], allow_partial: bool = False) -> Source:
    """Resolve a source; an empty or unknown one is a one-line error naming it. A shard folder
    that prepare has not finished, or that lacks shards prepare wrote, is refused naming what is
    missing, unless ``allow_partial`` (then its shards are used as they are)."""
    if isinstance(spec, (list, tuple)):
        urls = [u for s in spec for u in expand_urls(str(s))]
        if not urls:
            raise InputError("an empty list of shards")
        return Source(spec="::".join(map(str, spec)), shards=urls)
    s = os.fspath(spec)
    if not s:
        raise ConfigError("no data source given")
    if _is_url(s):
        urls = expand_urls(s)
        local = [u for u in urls if not u.startswith(URL_PREFIXES)]
        missing = [u for u in local if not os.path.isfile(u)]
        if missing:
            raise InputError(f"{s}: {len(missing)} of {len(urls)} shard(s) not found, e.g. {missing[0]}")
        return Source(spec=s, shards=urls)
    p = Path(s)
    if p.is_dir():
        shards = sorted(str(x) for x in p.glob("*.tar"))
        if not shards:
            hint = " (prepare has not finished any shard yet?)" if (p / PREPARE_NAME).exists() else ""
            raise InputError(f"{s}: a folder without shards (*.tar){hint}")
        src = Source(spec=s, shards=shards)
        if (p / LABELS_NAME).is_file():
            src.labels = p / LABELS_NAME
        if (p / PREPARE_NAME).is_file():
            try:
                src.prepared = json.loads((p / PREPARE_NAME).read_text())
            except ValueError as e:
                raise InputError(f"{p / PREPARE_NAME}: not valid JSON ({e})") from None
            if not isinstance(src.prepared, dict):
                raise InputError(f"{p / PREPARE_NAME}: not a JSON object")
        lacking = _incomplete(p, src.prepared, shards)
        if lacking and not allow_partial:
            raise InputError(f"{s}: a partial shard folder: {lacking}; run the same `avfusion prepare` command again "
                             f"(it writes what is missing), or pass {ALLOW_PARTIAL_HINT} to use the {len(shards)} "
                             "shard(s) there")
        return src
    if not p.exists():
        raise InputError(f"{s}: no such manifest, shard folder or file")
    if p.suffix.lower() == ".tar":
        return Source(spec=s, shards=[s])
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return Source(spec=s, manifest=p)
    raise InputError(f"{s}: not a manifest (.csv / .jsonl), a folder of shards, a .tar, a brace pattern or a "
                     "URL")


__all__ = ["Source", "resolve", "MANIFEST_SUFFIXES", "LABELS_NAME", "PREPARE_NAME", "DONE_DIR", "ALLOW_PARTIAL_HINT"]
