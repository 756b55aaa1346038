"""Pre-LN transformer blocks (ViT / scenic layout) with stochastic depth."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.layers.attention import Attention, CrossAttention
from avfusion.layers.linear import Linear
from avfusion.layers.masks import TokenMask


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability ``p``.

    As in scenic (which follows timm) each skip connection draws its own pattern, and the kept
    branches are rescaled by 1 / (1 - p) so the expectation is unchanged.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Dense -> GELU -> dropout -> Dense -> dropout (scenic's MlpBlock, timm's Mlp names)."""

    def __init__(self, dim: int, hidden: int, gelu: str = "tanh", drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU(approximate=gelu)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """x + attn(LN(x)); x + mlp(LN(x)). ``gelu`` is 'tanh' (flax / official MBT) or 'none' (exact)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        ln_eps: float = 1e-6,
        gelu: str = "tanh",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attn_impl: str = "auto",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, attn_impl)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, mlp_dim, gelu, drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: TokenMask | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), mask))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class CrossBlock(nn.Module):
    """Queries read context tokens: q + xattn(LN(q), LN(ctx)); q + mlp(LN(q)).

    Used by Zorro's readout, where learned queries attend to the encoder's final tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        ln_eps: float = 1e-6,
        gelu: str = "tanh",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        attn_impl: str = "auto",
    ):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=ln_eps)
        self.norm_kv = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = CrossAttention(dim, num_heads, qkv_bias, attn_drop, drop, attn_impl)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, mlp_dim, gelu, drop)

    def forward(
        self, q: torch.Tensor, context: torch.Tensor, mask: TokenMask | None = None
    ) -> torch.Tensor:
        q = q + self.attn(self.norm_q(q), self.norm_kv(context), mask)
        return q + self.mlp(self.norm2(q))


def drop_path_rates(depth: int, rate: float) -> list[float]:
    """Linear stochastic-depth schedule from 0 to ``rate`` (scenic: lyr / max(L - 1, 1) * rate)."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]
