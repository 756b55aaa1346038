"""One attention module for every fusion scheme.

Paths (selected by ``attn_impl``):

- ``"dense"``: the reference. ``scaled_dot_product_attention`` over all keys with the full
  boolean mask materialised from the :class:`~avfusion.layers.masks.TokenMask`.
- ``"split"``: the block-sparse path on any device. A block-structured mask runs as one SDPA
  call per query group over only its allowed keys, so masked blocks cost nothing.
- ``"flex"``: FlexAttention (``torch.nn.attention.flex_attention``) with a ``BlockMask`` built
  from the TokenMask (cached per layout and device); tiles with no allowed pair are skipped.
  Compiled on CUDA; eager on CPU, where FlexAttention has a forward but no backward pass, so
  use it there for inference only. FlexAttention has no attention dropout: with
  ``dropout_p > 0`` this path runs the split path instead.
- ``"auto"`` (default): ``"flex"`` on CUDA when FlexAttention is available (and no attention
  dropout), ``"split"`` everywhere else. If compiling FlexAttention fails, ``auto`` says so once
  and keeps to the split path.

A full mask (every query reads every key) and no mask run as one plain unmasked SDPA call on
every path. All paths equal ``"dense"`` within float tolerance (tests/layers/test_attention.py,
tests/layers/test_flex.py).

Attention maps: no fast path materialises its probabilities. Inside :func:`keep_attention`, an
:class:`Attention` / :class:`CrossAttention` module runs the reference computation with explicit
probabilities (softmax(q k^T / sqrt(d)) under the dense mask actually used: exactly 0 on masked
keys, each row summing to 1 over its allowed keys) and keeps them in ``module.kept``, one
(B, h, L_q, L_k) tensor per call.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.errors import ConfigError
from avfusion.layers.linear import Linear
from avfusion.layers.masks import TokenMask

AttnImpl = Literal["auto", "dense", "split", "flex"]
ATTN_IMPLS: tuple[str, ...] = ("auto", "dense", "split", "flex")


def check_attn_impl(impl: str) -> str:
    if impl not in ATTN_IMPLS:
        raise ConfigError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
    return impl


def flex_available() -> bool:
    """True when this torch has FlexAttention (torch >= 2.5)."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


_FLEX_COMPILED: Callable[..., torch.Tensor] | None = None
_FLEX_FAILED: str | None = None  # why compiled FlexAttention is off for 'auto', once it failed


def _flex_fn(device: torch.device) -> Callable[..., torch.Tensor]:
    """Compiled FlexAttention on CUDA (the fused kernel); eager elsewhere (forward only on CPU)."""
    global _FLEX_COMPILED
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return _eager_flex
    if torch.compiler.is_compiling():  # inside a compiled model: the outer compile fuses it
        return flex_attention
    if _FLEX_COMPILED is None:
        _FLEX_COMPILED = torch.compile(flex_attention, dynamic=False)
    return _FLEX_COMPILED


def _eager_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():  # eager flex warns that it is unfused; we know, it is the CPU path
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, block_mask=block_mask)


def _flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: TokenMask) -> torch.Tensor:
    block_mask = mask.flex_block_mask(q.device)
    return _flex_fn(q.device)(q, k, v, block_mask=block_mask)  # (B, h, Lq, hd)


def _split_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: TokenMask,
                  dropout_p: float) -> torch.Tensor:
    """One SDPA call per query group over only its allowed keys; blocks tile the queries in order.

    Cheap in the backward pass too: the query groups come from one ``split`` (its backward is one
    concatenation, where per-group slices would each allocate and add a zero-filled full-size
    gradient), and a group that reads every key uses k and v as they are, unsliced.
    """
    qs = q.split([b.q.stop - b.q.start for b in mask.blocks], dim=2)  # views, in order
    out = []
    for qb, block in zip(qs, mask.blocks):
        if len(block.k) == 1:  # contiguous allowed keys: a view, no copy
            s = block.k[0]
            kb, vb = (k, v) if s.start == 0 and s.stop == mask.len_k else (k[:, :, s], v[:, :, s])
        else:  # non-contiguous allowed keys: gather them once for this query group
            kb = torch.cat([k[:, :, s] for s in block.k], dim=2)
            vb = torch.cat([v[:, :, s] for s in block.k], dim=2)
        out.append(F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout_p))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: TokenMask | None = None,
    impl: str = "auto",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Multi-head attention core. q (B, h, Lq, hd), k/v (B, h, Lk, hd) -> (B, h, Lq, hd)."""
    global _FLEX_FAILED
    if mask is None or mask.is_full:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if impl == "dense":
        m = mask.dense(q.device)  # (Lq, Lk), broadcast over (B, h)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=dropout_p)
    if impl == "flex" and dropout_p == 0.0:
        return _flex_attend(q, k, v, mask)
    if impl == "auto" and dropout_p == 0.0 and q.is_cuda and _FLEX_FAILED is None and flex_available():
        try:
            return _flex_attend(q, k, v, mask)
        except Exception as e:  # an optimisation: say why it is off, once, and keep to the split path
            _FLEX_FAILED = f"{type(e).__name__}: {e}"
            print(f"attn_impl='auto': FlexAttention unavailable ({_FLEX_FAILED}); using the split path",
                  file=sys.stderr)
    return _split_attend(q, k, v, mask, dropout_p)


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) under a boolean ``mask`` (True = may attend), broadcastable to
    (B, h, Lq, Lk): q (B, h, Lq, hd), k (B, h, Lk, hd) -> (B, h, Lq, Lk), 0 on masked keys."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, h, Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # every row keeps a key (TokenMask asserts it)
    return scores.softmax(dim=-1)


def reference_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     dropout_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense reference with its probabilities made explicit: -> (out (B, h, Lq, hd), probs)."""
    probs = attention_probs(q, k, mask)  # (B, h, Lq, Lk)
    return F.dropout(probs, dropout_p) @ v, probs


class _KeepsAttention:
    """Mixin: while ``keep`` is on, the module runs :func:`reference_attend` and appends its
    probabilities (detached) to ``kept``. See :func:`keep_attention`."""

    keep: bool
    kept: list[torch.Tensor]

    def _heads(self, dim: int, num_heads: int, attn_drop: float, attn_impl: str) -> None:
        """The settings both attention modules share (no parameters: their creation order, and so
        the initialisation's random draws, stay each module's own)."""
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_drop = attn_drop
        self.attn_impl = check_attn_impl(attn_impl)
        self.keep, self.kept = False, []  # attention maps: see keep_attention

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: TokenMask | None,
                impl: str, dropout_p: float) -> torch.Tensor:
        if not self.keep:
            return attend(q, k, v, mask, impl, dropout_p)
        dense = None if mask is None or mask.is_full else mask.dense(q.device)  # (Lq, Lk)
        out, probs = reference_attend(q, k, v, dense, dropout_p)
        self.kept.append(probs.detach())
        return out


@contextmanager
def keep_attention(*modules: nn.Module) -> Iterator[None]:
    """Run the given attention modules on the reference path and keep their probabilities.

    ``with keep_attention(block.attn): model(inputs)`` leaves ``block.attn.kept`` holding one
    (B, h, L_q, L_k) tensor per call of that module (two when a shared block runs twice), under
    the mask the model used. Outside the block the modules are back on their configured path.
    """
    for m in modules:
        if not isinstance(m, _KeepsAttention):
            raise TypeError(f"{type(m).__name__} cannot keep attention probabilities")
        m.keep, m.kept = True, []
    try:
        yield
    finally:
        for m in modules:
            m.keep = False


class Attention(_KeepsAttention, nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's parameter layout).

    ``forward(x, mask)`` with x (B, L, D) and an optional :class:`TokenMask` over L.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        attn_impl: str = "auto",
    ):
        super().__init__()
        self._heads(dim, num_heads, attn_drop, attn_impl)
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: TokenMask | None = None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L, hd)
        drop = self.attn_drop if self.training else 0.0
        x = self._attend(q, k, v, mask, self.attn_impl, drop)  # (B, h, L, hd)
        x = x.transpose(1, 2).reshape(B, L, D)
        return self.proj_drop(self.proj(x))


class CrossAttention(_KeepsAttention, nn.Module):
    """Multi-head cross-attention: queries (B, Lq, D) read context tokens (B, Lk, D)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        attn_impl: str = "auto",
    ):
        super().__init__()
        self._heads(dim, num_heads, attn_drop, attn_impl)
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: TokenMask | None = None
    ) -> torch.Tensor:
        B, Lq, D = x.shape
        Lk = context.shape[1]
        q = self.q(x).reshape(B, Lq, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, Lq, hd)
        kv = self.kv(context).reshape(B, Lk, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, Lk, hd)
        drop = self.attn_drop if self.training else 0.0
        x = self._attend(q, k, v, mask, self.attn_impl, drop).transpose(1, 2).reshape(B, Lq, D)
        return self.proj_drop(self.proj(x))
