"""Prepared shards: the sample format (``encode_row``), and streaming them (``ShardDataset``).
Writing a corpus of them, in parallel and in parts, is avfusion.data.prepare.

One tar member group per row (key = the row's zero-padded place in the manifest; the row's id is
in the JSON, since WebDataset keys cannot hold dots):
- ``<key>.json``: id, labels (strings), the segment start / end and the stored range data_start /
  data_end (the segment, widened to a centred clip around a segment shorter than a clip) on the
  file's timeline, its origin, fps, sample_rate, presence flags, each stream's span, which stored
  frames / samples are real (runs), the rotation applied, validate's warnings and notes;
- video, the segment's frames on the ``fps`` grid, short side resized to ``short_side``, as either
  ``<key>.frames.mp4`` (``video_format="h264"``, default: H.264 crf 23, 16-frame GOPs, odd sizes
  cropped by one pixel to even; 7-13x smaller than JPEG, ~10% slower to read) or
  ``<key>.frames.msgpack`` (``video_format="jpeg"``: a list of JPEG bytes, MJPEG through PyAV;
  a clip decodes only its own frames: fastest, largest);
- ``<key>.audio.pcm``: the segment's audio, 16 kHz mono int16 little-endian (PCM: 96 dB of range,
  far below the noise floor of compressed source audio; half of float32).

A shard starts with a ``__meta__`` member (JSON; :data:`SHARD_META`): what a reader needs without
``prepare.json`` (a streamed shard has none beside it): the task the manifest implies, the label
map's digest and class count, the clip settings and video format it was prepared with, the shard
size, this shard's number and sample count, the corpus's shard and row counts. WebDataset skips
members named ``__*__`` (its metadata convention), so its readers, and avfusion's stream reader,
never see it as a sample; shards written before it have none and read as before.

The iterable dataset reads shards with ``webdataset``'s tar reader, splits the shard list by rank
and by loader worker (``shards[rank::world][worker::workers]``: disjoint and complete), keeps a
shuffle buffer, and cuts clips with the same :class:`ClipProcessor` as the file dataset.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import tarfile
import random
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Collection, Iterator, Sequence

import av
import msgpack
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from avfusion.core.config import MODALITIES
from avfusion.data import audio as A
from avfusion.data.audio import FbankSpec
from avfusion.data.clips import ClipConfig, ClipProcessor, ClipRead, take
from avfusion.data.decode import decode_video
from avfusion.data.manifest import LabelMap, ManifestError, Row, UnknownLabel
from avfusion.data.sources import PREPARE_NAME, URL_PREFIXES, Source, resolve
from avfusion.data.validate import check_row
from avfusion.errors import InputError, SampleError
from avfusion.utils.seeding import mix_seed, seed_all

VIDEO_FORMATS = ("jpeg", "h264")
SHARD_META = "__meta__"  # a shard's first member: its metadata (read_shard_meta), never a sample
JPEG_QUALITY = 3  # MJPEG qscale (2 = best .. 31): ~visually lossless at a few KB per 256p frame


# -- JPEG through PyAV ---------------------------------------------------------------------


def encode_jpegs(frames: np.ndarray, qscale: int = JPEG_QUALITY) -> list[bytes]:
    """uint8 (T, H, W, 3) -> one JPEG per frame."""
    if len(frames) == 0:
        return []
    h, w = frames.shape[1:3]
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"qmin": str(qscale), "qmax": str(qscale)}
    out = []
    for f in frames:
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuvj420p")
        pk = enc.encode(vf)
        out.append(b"".join(bytes(p) for p in pk))
    return out


def encode_h264(frames: np.ndarray, fps: float, crf: int = 23, gop: int = 16, fast_decode: bool = True) -> bytes:
    """uint8 (T, H, W, 3) -> an in-memory mp4; frame j has pts j at time base 1 / fps.

    ``fast_decode`` (x264's ``tune=fastdecode``: CAVLC, no deblocking): a training clip decodes in
    ~17% less CPU for ~10% more bytes at the same crf (0.1 dB PSNR; benchmarks/README.md).
    4:2:0 needs even sizes: an odd last row / column is dropped."""
    t, h, w = frames.shape[:3]
    h2, w2 = h - h % 2, w - w % 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        rate = Fraction(fps).limit_denominator(1001)
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w2, h2, "yuv420p"
        s.time_base = 1 / rate
        s.options = {"preset": "veryfast", "crf": str(crf), "g": str(gop), "bf": "0",
                     **({"tune": "fastdecode"} if fast_decode else {})}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h2, :w2]), format="rgb24")
            vf.pts = i
            for pk in s.encode(vf):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    return buf.getvalue()


def decode_jpegs(jpegs: Sequence[bytes]) -> np.ndarray:
    dec = av.CodecContext.create("mjpeg", "r")
    frames = []
    for b in jpegs:
        (f,) = dec.decode(av.Packet(b))
        frames.append(f.to_ndarray(format="rgb24"))
    return np.stack(frames)


# -- writing -------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[list[int]]:
    """[[start, end), ...] runs of True in a bool mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges.reshape(-1, 2).tolist()


def _covered(runs: Sequence[Sequence[int]], idx: np.ndarray) -> np.ndarray:
    """Which of the positions ``idx`` fall in one of ``runs``."""
    hit = np.zeros(idx.shape, dtype=bool)
    for a, b in runs:
        hit |= (idx >= a) & (idx < b)
    return hit


def encode_row(row: Row, labels: LabelMap, cfg: ClipConfig, video_format: str = "h264") -> dict[str, Any]:
    """Decode one row's whole segment into a WebDataset sample (bytes values).

    The row is checked by :func:`avfusion.data.validate.check_row`, the function behind
    ``avfusion validate``, from the same decode: a row validate calls an error raises
    InputError with the same reason, every other row is written."""
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"video_format must be one of {VIDEO_FORMATS}, got {video_format!r}")
    chk = check_row(row, labels, cfg, decode_check=True, collect=True)
    if not chk.ok:
        raise InputError(chk.first_error())
    d, tl, seg, rng = chk.decoded, chk.timeline, chk.segment, chk.data
    assert d is not None and tl is not None and seg is not None and rng is not None
    p = cfg.preprocess
    meta = {
        "id": row.id, "labels": row.labels, "start": seg.start, "end": seg.end, "origin": tl.origin,
        "data_start": rng.start, "data_end": rng.end, "fps": p.fps,
        "sample_rate": p.sample_rate, "short_side": p.short_side,
        "has_video": d.video is not None, "has_audio": d.audio is not None,
        "video_span": [tl.video.start, tl.video.end] if tl.video else None,
        "audio_span": [tl.audio.start, tl.audio.end] if tl.audio else None,
        "video_real": _runs(d.video_real) if d.video_real is not None else [],
        "audio_real": _runs(d.audio_real) if d.audio_real is not None else [],
        "num_frames": 0 if d.video is None else len(d.video), "rotation": d.rotation,
        "notes": [q.reason for q in chk.problems if q.severity != "error"],
    }
    sample: dict[str, Any] = {"json": json.dumps(meta).encode()}
    if d.video is not None and video_format == "jpeg":
        sample["frames.msgpack"] = msgpack.packb(encode_jpegs(d.video))
    elif d.video is not None:
        sample["frames.mp4"] = encode_h264(d.video, p.fps)
    if d.audio is not None:
        pcm = np.clip(np.round(d.audio * 32767.0), -32768, 32767).astype("<i2")
        sample["audio.pcm"] = pcm.tobytes()
    return sample


# -- reading -------------------------------------------------------------------------------


def _mel_lead(spec: FbankSpec) -> int:
    """Zero samples before stored sample 0 in a cached log-mel's signal: at least a window, and a
    whole number of frame shifts, so that stored sample 0 lies on the cache's frame grid."""
    return -(-spec.win // spec.hop) * spec.hop


class ShardSegment:
    """A prepared sample as a :class:`~avfusion.data.clips.MediaSegment`: frames decode lazily.

    ``source`` names the shard (and the sample's key) in errors."""

    REQUIRED = ("id", "labels", "start", "end", "fps", "sample_rate", "has_video", "has_audio", "num_frames")

    def __init__(self, sample: dict[str, Any], source: str = "") -> None:
        where = self.where = source or f"{sample.get('__url__', 'shard')} sample {sample.get('__key__', '?')}"
        if "json" not in sample:
            raise InputError(f"{where}: no .json member (not a sample written by `avfusion prepare`)")
        try:
            self.meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{where}: its .json member is not valid JSON ({e})") from None
        if not isinstance(self.meta, dict):
            raise InputError(f"{where}: its .json member is not an object ({type(self.meta).__name__})")
        missing = [k for k in self.REQUIRED if k not in self.meta]
        if missing:
            raise InputError(f"{where}: its .json lacks field(s) {missing} (written by an older or another tool?)")
        m = self.meta
        self.start, self.end = float(m["start"]), float(m["end"])  # the segment, on the file's timeline
        self.base = float(m.get("data_start", self.start))  # time of stored frame 0 / sample 0
        self.fps, self.sr = float(m["fps"]), int(m["sample_rate"])
        self.has_video, self.has_audio = bool(m["has_video"]), bool(m["has_audio"])
        # Which stored frames / samples are decoded data (the rest is padding); shards written
        # before runs were stored give one run.
        self.video_real = m.get("video_real", [[0, m.get("video_valid", m["num_frames"])]])
        self.audio_real = m.get("audio_real", [m["audio_range"]] if "audio_range" in m else [])
        self._jpegs = msgpack.unpackb(sample["frames.msgpack"]) if "frames.msgpack" in sample else None
        self._mp4: bytes | None = sample.get("frames.mp4")
        if self.has_video and self._jpegs is None and self._mp4 is None:
            raise InputError(f"{where}: has video but no frames member")
        if self.has_audio and "audio.pcm" not in sample:
            raise InputError(f"{where}: has audio but no audio.pcm member")
        self._pcm = np.frombuffer(sample["audio.pcm"], dtype="<i2") if self.has_audio else None
        self._all: np.ndarray | None = None  # every stored frame, once decode_all() ran
        # log-mel of [zeros, the stored audio, zeros] on the grid of its frame shift, once
        # decode_all(fbank=...) ran
        self._mel: torch.Tensor | None = None
        self._mel_spec: FbankSpec | None = None

    def decode_all(self, video: bool = True, fbank: FbankSpec | None = None) -> "ShardSegment":
        """Decode every stored frame now and keep them (uint8 (N, H, W, 3)): a cache for data read
        many times (small data sets, the demo); clips then only index into memory. ``video=False``:
        keep the frames compressed (a reader that never asks for them: an audio-only model).

        ``fbank``: also keep the log-mel of the whole stored audio, computed once. Kaldi fbank
        frames are local (each reads its own 25 ms), so a clip whose audio starts on this frame
        grid has exactly these frames as its log-mel: :meth:`read` then starts each audio span on
        the nearest grid point (at most half a frame shift, 5 ms, from where it was asked) and
        gives the frames with the waveform, and no fbank runs per clip."""
        if fbank is not None and self.has_audio and self._mel is None:
            assert self._pcm is not None
            pcm = torch.from_numpy(self._pcm.astype(np.float32) / 32767.0)  # as audio() reads it
            # Zeros around it: what a window reaching past the stored audio reads.
            self._mel_spec = fbank
            self._mel = A.fbank(torch.cat([torch.zeros(_mel_lead(fbank)), pcm, torch.zeros(fbank.win)]), fbank)  # (T_all, F)
        if video and self.has_video and self._all is None:
            n = int(self.meta["num_frames"])
            if self._jpegs is not None:
                self._all = decode_jpegs(self._jpegs)
            else:
                with av.open(io.BytesIO(self._mp4)) as c:  # type: ignore[arg-type]
                    self._all, _, _, _ = decode_video(c, np.arange(n) / self.fps)
            self._jpegs = self._mp4 = None  # the compressed copy is no longer needed
        return self

    def frames(self, times: np.ndarray) -> tuple[np.ndarray, int]:
        n = int(self.meta["num_frames"])
        idx = np.floor((np.asarray(times) - self.base) * self.fps + 1e-3).astype(int)  # frame shown at t
        valid = int(_covered(self.video_real, idx).sum())
        idx = idx.clip(0, n - 1)
        if self._all is not None:
            return self._all[idx], valid
        uniq, inv = np.unique(idx, return_inverse=True)  # decode each stored frame once
        if self._jpegs is not None:
            got = decode_jpegs([self._jpegs[i] for i in uniq])
        else:
            assert self._mp4 is not None
            with av.open(io.BytesIO(self._mp4)) as c:
                got, _, _, _ = decode_video(c, uniq / self.fps)  # stored frame j sits at j / fps
            assert got is not None
        # (T, H, W, 3); no gather copy when every time has its own stored frame (the usual case)
        in_order = len(uniq) == len(idx) and bool((np.diff(idx) > 0).all())
        return (got if in_order else got[inv]), valid

    def audio(self, t0: float, t1: float) -> tuple[np.ndarray, int]:
        assert self._pcm is not None
        n = int(round((t1 - t0) * self.sr))
        o = int(round((t0 - self.base) * self.sr))
        out = np.zeros(n, np.float32)
        s0, d0 = max(o, 0), max(-o, 0)
        m = max(0, min(len(self._pcm) - s0, n - d0))
        out[d0 : d0 + m] = self._pcm[s0 : s0 + m].astype(np.float32) / 32767.0
        valid = sum(max(0, min(b, s0 + m) - max(a, s0)) for a, b in self.audio_real) if m else 0
        return out, valid

    def read(self, times: np.ndarray, spans: Sequence[tuple[float, float]], samples: int,
             modalities: Collection[str] = MODALITIES) -> ClipRead:
        """See :class:`~avfusion.data.clips.MediaSegment`: stored frames and samples; no damage
        or notes (prepare judged the row when it stored it)."""
        got = ClipRead()
        if self.has_video and "video" in modalities:
            got.frames, got.video_valid = self.frames(times)
        if self.has_audio and "audio" in modalities:
            cut = self._cached_log_mel(spans, samples)
            if cut is not None:
                spans, got.features = cut
            parts = [self.audio(*s) for s in spans]
            got.audio = np.stack([take(wav, 0, samples) for wav, _ in parts])  # (K, N)
            got.audio_valid = sum(valid for _, valid in parts)
        return got

    def _cached_log_mel(self, spans: Sequence[tuple[float, float]],
                        samples: int) -> tuple[list[tuple[float, float]], torch.Tensor] | None:
        """The spans moved onto the cached log-mel's frame grid and their frames (K, T_a, F); None
        without a cache or when a span reaches further than it (the caller computes them)."""
        spec, mel = self._mel_spec, self._mel
        if spec is None or mel is None:
            return None
        frames, lead = spec.num_frames(samples), _mel_lead(spec)
        out, cuts = [], []
        for t0, _ in spans:
            j = int(round(((t0 - self.base) * self.sr + lead) / spec.hop))  # nearest grid frame
            if j < 0 or j + frames > len(mel):
                return None
            start = self.base + (j * spec.hop - lead) / self.sr
            out.append((start, start + samples / self.sr))
            cuts.append(mel[j : j + frames])
        return out, torch.stack(cuts)


def split_shards(shards: Sequence[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards one (rank, worker) reads: disjoint across all pairs, together complete."""
    return list(shards)[rank::world_size][worker::num_workers]


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def sample_from_raw(raw: dict[str, Any] | "ShardSegment", labels: LabelMap | None, proc: ClipProcessor,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
    """A stored sample (bytes values, with ``__url__`` / ``__key__``; or its ShardSegment) -> a
    model-ready sample, for both shard readers. Shards cut for another sample rate or frame grid
    are refused, naming them."""
    seg = raw if isinstance(raw, ShardSegment) else ShardSegment(raw)  # names the shard and sample in an error
    where = f"{seg.where} ({seg.meta['id']!r})"
    p = proc.cfg.preprocess
    # A clip's frames must land on stored frames: their spacing (frame_stride / fps) a whole number
    # of stored frame periods (shards stored at fps / frame_stride hold exactly the frames used).
    per_step = p.frame_stride / p.fps * seg.fps
    if seg.sr != p.sample_rate or abs(per_step - round(per_step)) > 1e-6 or round(per_step) < 1:
        raise InputError(f"{where}: prepared at {seg.fps:g} fps and {seg.sr} Hz, but the model reads every "
                         f"{p.frame_stride} frame(s) at {p.fps:g} fps and {p.sample_rate} Hz: prepare again with "
                         "--model")
    label = None
    if labels is not None:
        try:
            label = labels.encode(seg.meta["labels"])
        except (UnknownLabel, ManifestError) as e:  # shards prepared with another label map
            raise InputError(f"{where}: {e}") from None
    sample = proc(seg, generator)
    if label is not None:
        sample["label"] = label
    sample["id"] = seg.meta["id"]
    return sample


def index_shard(path: str) -> list[tuple[str, dict[str, tuple[int, int]], dict[str, Any]]]:
    """(key, {extension: (offset, size)}, the sample's JSON) for every sample of a local tar, in
    order: what random access needs. Reads the tar headers and the small JSON members only."""
    out: dict[str, tuple[dict[str, tuple[int, int]], dict[str, Any]]] = {}
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile() or m.name == SHARD_META:
                    continue
                key, _, ext = os.path.basename(m.name).partition(".")
                members, meta = out.setdefault(key, ({}, {}))
                members[ext] = (m.offset_data, m.size)
                if ext == "json":
                    f = tf.extractfile(m)
                    try:
                        found = json.loads(f.read()) if f is not None else {}
                    except ValueError as e:  # UnicodeDecodeError included
                        raise InputError(f"{path} sample {key}: its .json member is not valid JSON ({e})") from None
                    if not isinstance(found, dict):  # the same words as ShardSegment's (streamed reading)
                        raise InputError(f"{path} sample {key}: its .json member is not an object "
                                         f"({type(found).__name__})")
                    meta.update(found)
    except (tarfile.TarError, OSError) as e:
        raise InputError(f"{path}: not a readable tar ({e})") from None
    return [(k, members, meta) for k, (members, meta) in out.items()]


def shard_index(src: Source) -> tuple[list[tuple[int, str, dict[str, tuple[int, int]]]], list[Row]]:
    """Every sample of a source's local shards: (shard number, key, members) and a Row (id, labels,
    ``path`` = ``shard#key``), built once per Source (the tar headers and JSON members only)."""
    if src.index is None:
        entries, rows = [], []
        for si, path in enumerate(src.shards):
            for key, members, meta in index_shard(path):
                entries.append((si, key, members))
                rows.append(Row(str(meta.get("id", key)), f"{path}#{key}",
                                labels=[str(x) for x in meta.get("labels", [])]))
        src.index = (entries, rows)
    return src.index


class ShardSamples(Dataset):
    """Local shards read by random access: item i is one stored sample, found through an index of
    the tars (headers and JSON members, built once). A map-style dataset, so everything the
    manifest path has works unchanged on shards: the training loop's epoch permutation from
    (seed, epoch) alone, equal steps on every rank, exact resume, the balanced sampler
    (``self.rows`` carry the labels), and evaluation that visits each sample once across ranks.

    Errors as :class:`~avfusion.data.datasets.VideoDataset`: ``on_error="raise"`` raises a
    one-line SampleError naming the shard and sample, ``"mark"`` returns a marker for collate.
    ``exclude``: sample ids left out (a resumed batch inference). ``cache``: keep each sample
    decoded in memory once read (every stored frame and the audio; small data sets read for many
    epochs): clips are still cut, cropped and featurised per access, as without it.
    :meth:`fill_cache` decodes them all at once (before forking, to share them)."""

    def __init__(self, shards: Source | Sequence[str] | str | os.PathLike, labels: LabelMap | None,
                 cfg: ClipConfig, train: bool, on_error: str = "raise", exclude: Collection[str] = (),
                 cache: bool = False) -> None:
        src = shards if isinstance(shards, Source) else resolve(shards)
        if not src.is_shards:
            raise InputError(f"{src.spec}: a manifest, not shards (use VideoDataset)")
        remote = [u for u in src.shards if not os.path.isfile(u)]
        if remote:
            raise InputError(f"{remote[0]}: random access needs local shard files; stream it with ShardDataset")
        self.shards = list(src.shards)
        self.labels, self.cfg, self.train, self.on_error = labels, cfg, train, on_error
        self.proc = ClipProcessor(cfg, train)
        self.entries: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        self.rows: list[Row] = []  # id and labels of each item (samplers, reports)
        skip = set(exclude)
        for (si, key, members), row in zip(*shard_index(src)):
            if row.id not in skip:
                self.entries.append((si, key, members))
                self.rows.append(row)
        self._files: dict[int, Any] = {}
        self._pid = -1
        self.cache: dict[int, ShardSegment] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:  # the order comes from the sampler
        pass

    def _file(self, si: int) -> Any:
        if self._pid != os.getpid():  # a forked loader worker: its own handles
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(si)
        if f is None:
            if len(self._files) >= 64:  # bound the open files
                self._files.pop(next(iter(self._files))).close()
            f = self._files[si] = open(self.shards[si], "rb")
        return f

    def raw(self, i: int) -> dict[str, Any]:
        si, key, members = self.entries[i]
        f = self._file(si)
        raw: dict[str, Any] = {"__key__": key, "__url__": self.shards[si]}
        for ext, (offset, size) in members.items():
            f.seek(offset)
            raw[ext] = f.read(size)
        return raw

    def segment(self, i: int) -> ShardSegment:
        """Item i's stored sample (from the cache when there is one)."""
        if self.cache is None:
            return ShardSegment(self.raw(i))
        seg = self.cache.get(i)
        if seg is None:
            # The log-mel too where samples are featurised here (not on the batch's device).
            cfg = self.cfg
            fbank = cfg.fbank_spec if "audio" in cfg.modalities and cfg.audio_output != "waveform" else None
            seg = self.cache[i] = ShardSegment(self.raw(i)).decode_all(video="video" in cfg.modalities, fbank=fbank)
        return seg

    def fill_cache(self) -> None:
        for i in range(len(self)):
            self.segment(i)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return sample_from_raw(self.raw(i) if self.cache is None else self.segment(i), self.labels, self.proc)
        except (InputError, OSError) as e:
            msg = str(e)
            if self.on_error == "mark":
                return {"id": self.rows[i].id, "line": 0, "error": msg}
            raise SampleError(msg) from e


class ShardDataset(IterableDataset):
    """Streams shards from any source (local files, ``pipe:`` commands, http): the reader for shards
    that are not local files (local ones are better read by :class:`ShardSamples`).

    Order: the shard list permuted by (seed, epoch), the same on every rank, split as
    ``shards[rank::world][worker::workers]``, then a shuffle buffer of ``shuffle`` samples
    seeded by (seed, epoch, rank, worker).

    Training with ``epoch_samples`` (all ranks together) and ``batch_size``: every rank yields
    exactly ``epoch_samples // (world * batch_size)`` batches per epoch, split over its loader
    workers, re-reading its shards (reshuffled) when they run out, so a rank with fewer shards
    never leaves the others waiting in DDP. Each sample's augmentation is seeded from (seed, epoch,
    rank, worker, position). ``set_epoch(epoch, skip_batches)`` resumes mid-epoch: each worker
    skips, without decoding, the samples of the batches the loader already delivered, which
    reproduces the uninterrupted run exactly when the number of loader workers is the same.

    Without ``epoch_samples`` (evaluation, prediction): every sample of the reader's shards once,
    so each sample is seen exactly once across ranks and workers. ``on_error`` / ``exclude`` as
    :class:`ShardSamples`.
    """

    def __init__(self, shards: Source | Sequence[str] | str | os.PathLike, labels: LabelMap | None, cfg: ClipConfig,
                 train: bool, shuffle: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, epoch_samples: int | None = None, batch_size: int | None = None,
                 on_error: str = "raise", exclude: Collection[str] = ()) -> None:
        src = shards if isinstance(shards, Source) else resolve(shards)  # folder, pattern, list or URL
        if not src.is_shards:
            raise InputError(f"{src.spec}: a manifest, not shards (use VideoDataset)")
        if (epoch_samples is None) != (batch_size is None):
            raise ValueError("epoch_samples and batch_size go together")
        self.shards = list(src.shards)
        self.labels, self.cfg, self.train = labels, cfg, train
        self.proc = ClipProcessor(cfg, train)
        self.shuffle, self.seed, self.epoch, self.skip_batches = shuffle, seed, 0, 0
        self.epoch_samples, self.batch_size, self.on_error = epoch_samples, batch_size, on_error
        self.exclude = frozenset(exclude)  # ids to pass over before decoding (a resumed prediction run)
        r, w = _dist()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def batches_per_rank(self) -> int:
        assert self.epoch_samples is not None and self.batch_size is not None
        return self.epoch_samples // (self.world_size * self.batch_size)

    def _order(self) -> list[str]:
        shards = list(self.shards)
        if self.train:
            random.Random(mix_seed(self.seed, self.epoch)).shuffle(shards)  # the same order on every rank
        return shards

    def my_shards(self) -> list[str]:
        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi else (0, 1)
        return split_shards(self._order(), self.rank, self.world_size, wid, nw)

    def raw(self) -> Iterator[dict[str, Any]]:
        """The stored samples of this reader's shards, in order (bytes values), each once."""
        mine = self.my_shards()
        if not mine:
            wi = get_worker_info()
            warnings.warn(f"rank {self.rank} worker {wi.id if wi else 0}: no shard to read ({len(self.shards)} "
                          f"shards for {self.world_size} ranks x {wi.num_workers if wi else 1} workers)")
        for url in mine:
            for sample in _group(url):
                if not self.exclude or _stored_id(sample) not in self.exclude:
                    yield sample

    def _cycle(self, wid: int, nw: int) -> Iterator[dict[str, Any]]:
        """This reader's shards over and over (reshuffled each pass): a fixed-length epoch never runs
        dry. A reader without a shard of its own re-reads one of the others'."""
        order = self._order()
        mine = split_shards(order, self.rank, self.world_size, wid, nw) or [order[(self.rank * nw + wid) % len(order)]]
        for cycle in itertools.count():
            shards = list(mine)
            if cycle:
                random.Random(mix_seed(self.seed, self.epoch, self.rank, wid, cycle)).shuffle(shards)
            for url in shards:
                yield from _group(url)

    def _sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            return sample_from_raw(raw, self.labels, self.proc)
        except InputError as e:
            if self.on_error != "mark":
                raise
            return {"id": raw.get("__key__", "?"), "line": 0, "error": str(e)}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi else (0, 1)
        if self.epoch_samples is not None and self.skip_batches:
            # A resumed loader asks its workers in turn from worker 0 again, while the interrupted
            # one was due to ask worker w next: loader worker i plays worker (i + w) % nw's part
            # (its shards, shuffle and seeds), which delivers the rest in the original order.
            counts = split_evenly(self.batches_per_rank(), nw)
            wid = (wid + next_worker(counts, self.skip_batches)) % nw
        stream: Iterator[dict[str, Any]]
        if self.epoch_samples is None:
            stream = self.raw()  # (leaves out ``exclude``)
        else:
            stream = (r for r in self._cycle(wid, nw) if not self.exclude or _stored_id(r) not in self.exclude)
        if self.train and self.shuffle > 1:
            stream = _shuffle(stream, self.shuffle, random.Random(mix_seed(self.seed, self.epoch, self.rank, wid)))
        if self.epoch_samples is None:
            for raw in stream:
                yield self._sample(raw)
            return
        counts = split_evenly(self.batches_per_rank(), nw)
        skip = delivered_by_worker(counts, self.skip_batches)[wid] * self.batch_size  # type: ignore[operator]
        for k, raw in enumerate(itertools.islice(stream, counts[wid] * self.batch_size)):  # type: ignore[operator]
            if k < skip:  # delivered before the interruption: read past, not decoded
                continue
            seed_all(mix_seed(self.seed, self.epoch, self.rank, wid, k))
            yield self._sample(raw)


def split_evenly(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (i < extra) for i in range(parts)]


def next_worker(counts: Sequence[int], batches: int) -> int:
    """The loader worker that delivers batch number ``batches`` (0-based) of an epoch in which
    worker w yields ``counts[w]`` batches, taken in turn (0 past the end)."""
    seen = 0
    for r in range(max(counts, default=0)):
        for w, c in enumerate(counts):
            if r < c:
                if seen == batches:
                    return w
                seen += 1
    return 0


def delivered_by_worker(counts: Sequence[int], batches: int) -> list[int]:
    """How many of the first ``batches`` batches came from each loader worker: a DataLoader over
    an iterable dataset takes batches from its workers in turn, skipping a worker that is done."""
    out = [0] * len(counts)
    left = batches
    for r in range(max(counts, default=0)):
        for w, c in enumerate(counts):
            if left == 0:
                return out
            if r < c:
                out[w] += 1
                left -= 1
    return out


def _open(url: str) -> Any:
    try:
        return wds.gopen(url, "rb")
    except OSError as e:
        raise InputError(f"{url}: cannot open: {e.strerror or e}") from None


def _unreadable(url: str, stream: Any, e: Exception) -> InputError:
    """The one-line error for a stream that failed: its command's exit status, else the tar reader's reason."""
    with contextlib.suppress(OSError):
        stream.close()  # a pipe: waits for its command, whose exit status says what went wrong
    status = getattr(stream, "status", None)
    if status:
        return InputError(f"{url}: the command exited with status {status}")
    return InputError(f"{url}: not a readable tar ({_tar_reason(e)})")


def _group(url: str) -> Iterator[dict[str, Any]]:
    """Samples of one tar (a path or any URL webdataset's ``gopen`` opens), grouped by key,
    through webdataset's tar reader (which passes over ``__meta__``)."""
    stream = _open(url)
    try:
        files = ({**f, "__url__": url} for f in wds.tariterators.tar_file_iterator(stream))
        yield from wds.tariterators.group_by_keys(files)
        stream.close()  # a pipe: command's exit status is checked here
    except (tarfile.TarError, OSError) as e:
        raise _unreadable(url, stream, e) from None


def read_shard_meta(url: str) -> dict[str, Any] | None:
    """A shard's ``__meta__`` (a path or any URL ``gopen`` opens), or None for a shard written
    without one. Reads the first member only: a stream is closed right after it."""
    stream = _open(url)
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*")
        first = tf.next()
        f = tf.extractfile(first) if first is not None and first.name == SHARD_META else None
        data = f.read() if f is not None else None
    except (tarfile.TarError, OSError) as e:
        raise _unreadable(url, stream, e) from None
    with contextlib.suppress(OSError):  # a command cut off after what was read exits with SIGPIPE
        stream.close()
    if data is None:
        return None
    return _json_object(data, f"{url}: its {SHARD_META} member")


@dataclass
class StreamFacts:
    """What streamed shards say about themselves (:func:`stream_facts`); None: not knowable."""

    task: str | None  # the task the manifest implied (their __meta__); None for shards without one
    samples: int | None  # how many samples the shards named hold
    where: str  # where that was read, for messages


def stream_facts(src: Source, count: bool = True) -> StreamFacts:
    """The task and sample count of a source's shards, for streaming them: the task from the first
    shard's ``__meta__``; the count from ``prepare.json`` (the folder's, or one beside the shards:
    a local folder or an http(s) prefix, never a ``pipe:`` command's), else, with ``count``, from
    the ``__meta__`` of every shard (one short read each; None if one has none)."""
    first = read_shard_meta(src.shards[0])
    task = first.get("task") if first else None
    where = f"the {SHARD_META} of {src.shards[0]}"
    samples, beside = _prepared_count(src)
    if samples is not None:
        return StreamFacts(task, samples, beside)
    if count and first is not None:
        if len(src.shards) > _SCAN_NOTE:
            print(f"reading the sample counts of {len(src.shards)} shards (one {SHARD_META} each; data.epoch_samples "
                  "skips this)", file=sys.stderr)
        with ThreadPoolExecutor(8) as pool:
            metas = [first, *pool.map(read_shard_meta, src.shards[1:])]
        if all(m is not None and isinstance(m.get("samples"), int) for m in metas):
            return StreamFacts(task, sum(m["samples"] for m in metas), f"the {SHARD_META} of each shard")  # type: ignore[index]
    return StreamFacts(task, None, where)


_SCAN_NOTE = 64  # reading more shards' __meta__ than this says so first: each may be a command or a download


def _prepared_count(src: Source) -> tuple[int | None, str]:
    """The samples in ``src``'s shards according to a prepare.json (its folder's, or beside them)."""
    names = [u.rsplit("/", 1)[-1] for u in src.shards]
    if src.prepared is not None:
        where, prepared = f"{src.spec}/{PREPARE_NAME}", src.prepared
    else:
        found = prepared_beside(src.shards)
        if found is None:
            return None, ""
        where, prepared = found
    counts = prepared.get("shard_samples")
    if isinstance(counts, dict) and all(isinstance(counts.get(n), int) for n in names):
        return sum(counts[n] for n in names), where
    # a prepare.json written before it had shard_samples: its "ok" counts every shard it lists;
    # a folder's own keeps meaning its "ok", as it did
    listed = sorted(str(x).rsplit("/", 1)[-1] for x in prepared.get("shards") or [])
    if isinstance(prepared.get("ok"), int) and (src.prepared is not None or listed == sorted(names)):
        return prepared["ok"], where
    return None, ""


def prepared_beside(urls: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """(its address, its content) of the ``prepare.json`` beside shards that share one folder: a
    local folder or an http(s) prefix (fetched as the shards are, with curl); None when there is
    none, or for other URLs (``pipe:`` commands name no folder)."""
    folders = {u.rsplit("/", 1)[0] for u in urls}
    if len(folders) != 1:
        return None
    where = f"{folders.pop()}/{PREPARE_NAME}"
    if where.startswith(("http://", "https://")):
        try:
            with wds.gopen(where, "rb") as f:
                text = f.read()
        except (OSError, ValueError):  # not there (curl -f fails), or not reachable: not beside them
            return None
    elif not where.startswith(URL_PREFIXES) and os.path.isfile(where):
        with open(where, "rb") as f:
            text = f.read()
    else:
        return None
    return where, _json_object(text, where)


def _json_object(data: str | bytes, what: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object, or one line naming ``what`` and why not."""
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise InputError(f"{what}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what}: not a JSON object ({type(obj).__name__})")
    return obj


def _tar_reason(e: Exception) -> str:
    """The reader's reason, without webdataset's dump of the command's arguments."""
    msg = str(e)
    return "the stream ended early" if msg.startswith("((") or not msg else msg.split(" @ <", 1)[0]


def _stored_id(sample: dict[str, Any]) -> str | None:
    """The id in a stored sample's JSON, read without decoding anything else (None if unreadable:
    ShardSegment then reports the sample)."""
    try:
        return json.loads(sample["json"]).get("id")
    except (KeyError, ValueError, UnicodeDecodeError, AttributeError):
        return None


def _shuffle(src: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    buf: list[Any] = []
    for x in src:
        if len(buf) < size:
            buf.append(x)
            continue
        i = rng.randrange(len(buf))
        yield buf[i]
        buf[i] = x
    rng.shuffle(buf)
    yield from buf
