"""Attention masks built from token types.

Convention (DESIGN.md section 2): a boolean mask, ``True`` = the query may attend to the key,
broadcastable to (B, heads, L_q, L_k). A mask must never leave a query row without an allowed
key: SDPA would turn such a row into NaN or a uniform average over keys it must not see, which
is exactly how a modality leak hides. :class:`TokenMask` asserts it when the mask is built.

A mask here is *block structured*: every token has a type (audio, video, fusion, ...), tokens of
one type are contiguous, and a routing rule says which key types each query type may read.
That structure is kept (not only the dense matrix) so attention can run one call per query
group over just its allowed keys instead of paying for masked blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import torch


class TokenType(IntEnum):
    AUDIO = 0
    VIDEO = 1
    FUSION = 2
    BOTTLENECK = 3
    CLS = 4
    QUERY = 5


# A routing rule: query type -> the key types it may attend to.
Rule = Mapping[TokenType, frozenset[TokenType]]

A, V, F = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION
ALL_AV = frozenset({A, V, F})

# The routing rules of the masked fusion family (DESIGN.md section 3).
RULES: dict[str, Rule] = {
    # Zorro: modality tokens stay pure, fusion tokens read everything.
    "zorro": {A: frozenset({A}), V: frozenset({V}), F: ALL_AV},
    # MBT-style bottleneck as a mask in one stack: modality tokens also read the fusion tokens.
    "bottleneck_mask": {A: frozenset({A, F}), V: frozenset({V, F}), F: ALL_AV},
    # Input-level (early) fusion: no routing at all.
    "all": {A: ALL_AV, V: ALL_AV, F: ALL_AV},
    # Unimodal streams (layers before fusion, and the independent-streams ablation).
    "unimodal": {A: frozenset({A}), V: frozenset({V}), F: frozenset({F})},
}


@dataclass(frozen=True)
class Segment:
    """A contiguous run of tokens of one type: positions [start, stop)."""

    type: TokenType
    start: int
    stop: int


def segments_of(types: Sequence[TokenType], lengths: Sequence[int]) -> tuple[Segment, ...]:
    """Lay out segments one after another; zero-length segments are dropped."""
    out, pos = [], 0
    for t, n in zip(types, lengths, strict=True):
        if n > 0:
            out.append(Segment(TokenType(t), pos, pos + n))
            pos += n
    return tuple(out)


@dataclass(frozen=True)
class KeyBlock:
    """One attention call of the block-sparse path: a query range and the key ranges it reads."""

    q: slice
    k: tuple[slice, ...]


class TokenMask:
    """A block-structured mask between a query layout and a key layout.

    Args:
        q_segments: layout of the query tokens.
        k_segments: layout of the key tokens (the same object for self-attention).
        rule: which key types each query type may attend to.
    """

    def __init__(self, q_segments: tuple[Segment, ...], k_segments: tuple[Segment, ...], rule: Rule):
        self.q_segments, self.k_segments, self.rule = q_segments, k_segments, rule
        self.len_q = q_segments[-1].stop if q_segments else 0
        self.len_k = k_segments[-1].stop if k_segments else 0
        blocks = []
        for qs in q_segments:
            allowed = rule.get(qs.type, frozenset())
            ks = tuple(slice(s.start, s.stop) for s in k_segments if s.type in allowed)
            # The contract: no query may be left without a key (would be NaN or a silent leak).
            if not ks:
                raise ValueError(
                    f"mask leaves the {qs.type.name.lower()} queries without any allowed key "
                    f"(allowed key types {sorted(t.name for t in allowed)}, key layout "
                    f"{[s.type.name for s in k_segments]})"
                )
            blocks.append(KeyBlock(slice(qs.start, qs.stop), _merge_slices(ks)))
        self.blocks: tuple[KeyBlock, ...] = tuple(blocks)

    @property
    def is_full(self) -> bool:
        """True when every query may read every key (no mask needed at all)."""
        return all(len(b.k) == 1 and b.k[0] == slice(0, self.len_k) for b in self.blocks)

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L_q, L_k) boolean matrix, True = may attend: the reference representation."""
        m = torch.zeros(self.len_q, self.len_k, dtype=torch.bool, device=device)
        for b in self.blocks:
            for k in b.k:
                m[b.q, k] = True
        return m

    @property
    def key(self) -> tuple:
        """A hashable identity of this mask (layouts + rule): equal keys mean equal masks."""
        rule = tuple(sorted((int(t), tuple(sorted(int(k) for k in ks))) for t, ks in self.rule.items()))
        return (self.q_segments, self.k_segments, rule)

    def flex_block_mask(self, device: torch.device | str) -> Any:
        """A FlexAttention ``BlockMask`` for this mask on ``device``, built once per layout + device.

        The mask function looks the (query, key) pair up in :meth:`dense`, so it is the reference
        mask by construction; FlexAttention then skips every (128 x 128) tile that has no allowed
        pair. Cached module-wide, because the models rebuild their TokenMask objects every forward.
        """
        return flex_block_mask(self, device)

    def __repr__(self) -> str:
        q = [f"{s.type.name.lower()}:{s.stop - s.start}" for s in self.q_segments]
        return f"TokenMask(q={q}, blocks={len(self.blocks)}, full={self.is_full})"


_FLEX_CACHE: dict[tuple, Any] = {}
_FLEX_CACHE_SIZE = 64


def flex_block_mask(mask: TokenMask, device: torch.device | str) -> Any:
    """See :meth:`TokenMask.flex_block_mask`. Raises ImportError without FlexAttention."""
    from torch.nn.attention.flex_attention import create_block_mask

    device = torch.device(device)
    cache_key = (mask.key, str(device))
    hit = None if torch.compiler.is_compiling() else _FLEX_CACHE.get(cache_key)
    if hit is not None:
        return hit
    allowed = mask.dense(device)  # (Lq, Lk) bool

    def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202  (FlexAttention's signature)
        return allowed[q_idx, kv_idx]

    block_mask = create_block_mask(mask_mod, None, None, mask.len_q, mask.len_k, device=device)
    if torch.compiler.is_compiling():  # traced (compile, export): fake tensors must not reach the cache
        return block_mask
    if len(_FLEX_CACHE) >= _FLEX_CACHE_SIZE:  # layouts are few; keep the cache bounded anyway
        _FLEX_CACHE.pop(next(iter(_FLEX_CACHE)))
    _FLEX_CACHE[cache_key] = block_mask
    return block_mask


def self_mask(segments: tuple[Segment, ...], rule: Rule) -> TokenMask:
    return TokenMask(segments, segments, rule)


def _merge_slices(slices: tuple[slice, ...]) -> tuple[slice, ...]:
    """Merge adjacent key ranges so a contiguous key set is one slice (no gather needed)."""
    merged: list[slice] = []
    for s in slices:
        if merged and merged[-1].stop == s.start:
            merged[-1] = slice(merged[-1].start, s.stop)
        else:
            merged.append(s)
    return tuple(merged)
