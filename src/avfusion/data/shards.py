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

The iterable dataset reads shards with ``webdataset``'s tar reader, splits the shard list by rank
and by loader worker (``shards[rank::world][worker::workers]``: disjoint and complete), keeps a
shuffle buffer, and cuts clips with the same :class:`ClipProcessor` as the file dataset.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import random
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import av
import msgpack
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from avfusion.data.clips import ClipConfig, ClipProcessor
from avfusion.data.decode import decode_video
from avfusion.data.manifest import LabelMap, ManifestError, Row, UnknownLabel
from avfusion.data.sources import Source, resolve
from avfusion.data.validate import check_row
from avfusion.errors import InputError

VIDEO_FORMATS = ("jpeg", "h264")
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


def encode_h264(frames: np.ndarray, fps: float, crf: int = 23, gop: int = 16) -> bytes:
    """uint8 (T, H, W, 3) -> an in-memory mp4; frame j has pts j at time base 1 / fps.

    4:2:0 needs even sizes: an odd last row / column is dropped."""
    t, h, w = frames.shape[:3]
    h2, w2 = h - h % 2, w - w % 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        rate = Fraction(fps).limit_denominator(1001)
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w2, h2, "yuv420p"
        s.time_base = 1 / rate
        s.options = {"preset": "veryfast", "crf": str(crf), "g": str(gop), "bf": "0"}
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


class ShardSegment:
    """A prepared sample seen as a segment (see clips.Segment): frames decode lazily.

    ``source`` names the shard (and the sample's key) in errors."""

    REQUIRED = ("id", "labels", "start", "end", "fps", "sample_rate", "has_video", "has_audio", "num_frames")

    def __init__(self, sample: dict[str, Any], source: str = "") -> None:
        where = source or f"{sample.get('__url__', 'shard')} sample {sample.get('__key__', '?')}"
        if "json" not in sample:
            raise InputError(f"{where}: no .json member (not a sample written by `avfusion prepare`)")
        try:
            self.meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{where}: its .json member is not valid JSON ({e})") from None
        if not isinstance(self.meta, dict):
            raise InputError(f"{where}: its .json member is not an object")
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

    def frames(self, times: np.ndarray) -> tuple[np.ndarray, int]:
        n = int(self.meta["num_frames"])
        idx = np.floor((np.asarray(times) - self.base) * self.fps + 1e-3).astype(int)  # frame shown at t
        valid = int(_covered(self.video_real, idx).sum())
        idx = idx.clip(0, n - 1)
        uniq, inv = np.unique(idx, return_inverse=True)  # decode each stored frame once
        if self._jpegs is not None:
            return decode_jpegs([self._jpegs[i] for i in uniq])[inv], valid
        assert self._mp4 is not None
        with av.open(io.BytesIO(self._mp4)) as c:
            got, _, _, _ = decode_video(c, uniq / self.fps)  # stored frame j sits at j / fps
        assert got is not None
        return got[inv], valid

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


def split_shards(shards: Sequence[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards one (rank, worker) reads: disjoint across all pairs, together complete."""
    return list(shards)[rank::world_size][worker::num_workers]


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """Streams prepared shards: split by rank and worker, shuffle buffer, clip cutting.

    With more (rank, worker) pairs than shards some readers get nothing (a warning says so);
    prepare with ``--shard-size`` small enough for your world x workers.
    """

    def __init__(self, shards: Source | Sequence[str] | str | os.PathLike, labels: LabelMap, cfg: ClipConfig,
                 train: bool, shuffle: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, exclude: Collection[str] = ()) -> None:
        src = shards if isinstance(shards, Source) else resolve(shards)  # folder, pattern, list or URL
        self.exclude = frozenset(exclude)  # ids to pass over before decoding (a resumed prediction run)
        if not src.is_shards:
            raise InputError(f"{src.spec}: a manifest, not shards (use VideoDataset)")
        self.shards = list(src.shards)
        self.labels, self.cfg, self.train = labels, cfg, train
        self.proc = ClipProcessor(cfg, train)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        r, w = _dist()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[str]:
        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi else (0, 1)
        shards = list(self.shards)
        if self.train and self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(shards)  # same order on every rank
        return split_shards(shards, self.rank, self.world_size, wid, nw)

    def raw(self) -> Iterator[dict[str, Any]]:
        """The stored samples of this reader's shards, in order (bytes values)."""
        mine = self.my_shards()
        if not mine:
            wi = get_worker_info()
            warnings.warn(f"rank {self.rank} worker {wi.id if wi else 0}: no shard to read ({len(self.shards)} "
                          f"shards for {self.world_size} ranks x {wi.num_workers if wi else 1} workers)")
        for url in mine:
            for sample in _group(url):
                if not self.exclude or _stored_id(sample) not in self.exclude:
                    yield sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wi = get_worker_info()
        wid = wi.id if wi else 0
        rng = random.Random(hash((self.seed, self.epoch, self.rank, wid)))
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.rank, wid)) & 0x7FFFFFFF)
        src = self.raw()
        if self.train and self.shuffle > 1:
            src = _shuffle(src, self.shuffle, rng)
        for raw in src:
            seg = ShardSegment(raw)  # names the shard and sample in an error
            try:
                label = self.labels.encode(seg.meta["labels"])
            except (UnknownLabel, ManifestError) as e:  # shards prepared with another label map
                raise InputError(f"{raw.get('__url__')} sample {raw.get('__key__')} ({seg.meta['id']!r}): "
                                 f"{e}") from None
            sample = self.proc(seg, g if self.train else None)
            sample["label"] = label
            sample["id"] = seg.meta["id"]
            yield sample


def _group(url: str) -> Iterator[dict[str, Any]]:
    """Samples of one tar (a path or any URL webdataset's ``gopen`` opens), grouped by key,
    through webdataset's tar reader."""
    try:
        stream = wds.gopen(url, "rb")
    except OSError as e:
        raise InputError(f"{url}: cannot open: {e.strerror or e}") from None
    try:
        files = ({**f, "__url__": url} for f in wds.tariterators.tar_file_iterator(stream))
        yield from wds.tariterators.group_by_keys(files)
        stream.close()  # a pipe: command's exit status is checked here
    except (tarfile.TarError, OSError) as e:
        with contextlib.suppress(OSError):
            stream.close()
        what = "the command failed" if url.startswith("pipe:") else "not a readable tar"
        raise InputError(f"{url}: {what} ({e})") from None


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
