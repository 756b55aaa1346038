"""One attention module for every fusion scheme.

Paths (selected by ``attn_impl``):

- ``"dense"``: the reference. ``scaled_dot_product_attention`` over all keys with the full
  boolean mask materialised from the :class:`~avfusion.layers.masks.TokenMask`.
- ``"auto"`` (default): the block-sparse path. A block-structured mask runs as one SDPA call per
  query group over only its allowed keys, so masked blocks cost nothing; a full mask runs as a
  plain unmasked call. Equal to ``"dense"`` within float tolerance (tests/layers/test_attention.py).

Without a mask both paths are the same unmasked SDPA call.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.layers.masks import TokenMask

AttnImpl = Literal["auto", "dense"]
ATTN_IMPLS: tuple[str, ...] = ("auto", "dense")


def check_attn_impl(impl: str) -> str:
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
    return impl


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: TokenMask | None = None,
    impl: str = "auto",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Multi-head attention core. q (B, h, Lq, hd), k/v (B, h, Lk, hd) -> (B, h, Lq, hd)."""
    if mask is None or mask.is_full:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if impl == "dense":
        m = mask.dense(q.device)  # (Lq, Lk), broadcast over (B, h)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=dropout_p)
    out = []
    for block in mask.blocks:
        if len(block.k) == 1:
            kb, vb = k[:, :, block.k[0]], v[:, :, block.k[0]]
        else:  # non-contiguous allowed keys: gather them once for this query group
            kb = torch.cat([k[:, :, s] for s in block.k], dim=2)
            vb = torch.cat([v[:, :, s] for s in block.k], dim=2)
        out.append(F.scaled_dot_product_attention(q[:, :, block.q], kb, vb, dropout_p=dropout_p))
    return torch.cat(out, dim=2)  # blocks tile the queries in order


class Attention(nn.Module):
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
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_impl = check_attn_impl(attn_impl)

    def forward(self, x: torch.Tensor, mask: TokenMask | None = None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L, hd)
        drop = self.attn_drop if self.training else 0.0
        x = attend(q, k, v, mask, self.attn_impl, drop)  # (B, h, L, hd)
        x = x.transpose(1, 2).reshape(B, L, D)
        return self.proj_drop(self.proj(x))


class CrossAttention(nn.Module):
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
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_impl = check_attn_impl(attn_impl)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: TokenMask | None = None
    ) -> torch.Tensor:
        B, Lq, D = x.shape
        Lk = context.shape[1]
        q = self.q(x).reshape(B, Lq, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, Lq, hd)
        kv = self.kv(context).reshape(B, Lk, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, Lk, hd)
        drop = self.attn_drop if self.training else 0.0
        x = attend(q, k, v, mask, self.attn_impl, drop).transpose(1, 2).reshape(B, Lq, D)
        return self.proj_drop(self.proj(x))
