"""Zorro's readout: learned queries cross-attend to the final tokens through routing masks.

Each output has its own query: the audio query reads audio tokens only, the video query video
tokens only, the fusion query the fusion tokens, and the global query every token. Because
the readout masks follow the same routing as the encoder, the audio and video outputs stay
modality-pure. A query whose source tokens are absent (audio query without audio) is not run.
"""

from __future__ import annotations

import torch
from torch import nn

from avfusion.layers.block import CrossBlock
from avfusion.layers.masks import Segment, TokenMask, TokenType, segments_of

OUTPUTS: tuple[str, ...] = ("audio", "video", "fusion", "global")


def readout_outputs(num_fusion_tokens: int) -> tuple[str, ...]:
    """The outputs a readout has: no fusion output without fusion tokens (the fusion query
    would have nothing to read)."""
    return OUTPUTS if num_fusion_tokens > 0 else tuple(o for o in OUTPUTS if o != "fusion")

# Each output's query type, and the token types it reads.
_QUERY_TYPE = {"audio": TokenType.AUDIO, "video": TokenType.VIDEO, "fusion": TokenType.FUSION,
               "global": TokenType.QUERY}
_READS = {
    TokenType.AUDIO: frozenset({TokenType.AUDIO}),
    TokenType.VIDEO: frozenset({TokenType.VIDEO}),
    TokenType.FUSION: frozenset({TokenType.FUSION}),
    TokenType.QUERY: frozenset({TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION}),
}


class Readout(nn.Module):
    """Queries (one per output) -> masked cross-attention block -> LayerNorm -> (B, D) per output."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, outputs: tuple[str, ...] = OUTPUTS,
                 qkv_bias: bool = True, ln_eps: float = 1e-6, gelu: str = "tanh", attn_impl: str = "auto"):
        super().__init__()
        self.outputs = outputs
        self.query = nn.ParameterDict({o: nn.Parameter(torch.randn(1, 1, dim) * 0.02) for o in outputs})
        self.block = CrossBlock(dim, num_heads, mlp_dim, qkv_bias, ln_eps, gelu, attn_impl=attn_impl)
        self.norm = nn.LayerNorm(dim, eps=ln_eps)

    def runnable(self, key_segments: tuple[Segment, ...]) -> tuple[str, ...]:
        """The outputs whose query has at least one token to read in this layout."""
        present = {s.type for s in key_segments}
        return tuple(o for o in self.outputs if _READS[_QUERY_TYPE[o]] & present)

    def forward(self, tokens: torch.Tensor, key_segments: tuple[Segment, ...]) -> dict[str, torch.Tensor]:
        """tokens (B, L, D) laid out as ``key_segments`` -> output name -> (B, D)."""
        names = self.runnable(key_segments)
        B = tokens.shape[0]
        q = torch.cat([self.query[o] for o in names], dim=1).expand(B, -1, -1)  # (B, n_out, D)
        q_segments = segments_of([_QUERY_TYPE[o] for o in names], [1] * len(names))
        mask = TokenMask(q_segments, key_segments, _READS)
        q = self.norm(self.block(q, tokens, mask))  # (B, n_out, D)
        return {o: q[:, i] for i, o in enumerate(names)}
