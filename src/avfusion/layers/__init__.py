"""Building blocks shared by every fusion scheme. Imports nothing above this package
(tests/test_layering.py checks it)."""

from avfusion.layers.attention import ATTN_IMPLS, Attention, CrossAttention, attend, attention_probs, keep_attention
from avfusion.layers.block import Block, CrossBlock, DropPath, Mlp, drop_path_rates
from avfusion.layers.linear import CPU_GEMMS, Linear, cpu_gemm, gemm_choices, set_cpu_gemm
from avfusion.layers.masks import RULES, Segment, TokenMask, TokenType, segments_of, self_mask
from avfusion.layers.patch_embed import SpectrogramEmbed, TubeletEmbed
from avfusion.layers.pos_embed import resample_pos_embed
from avfusion.layers.tokenizer import ModalityTokenizer

__all__ = [
    "ATTN_IMPLS", "Attention", "CrossAttention", "attend", "attention_probs", "keep_attention", "Block",
    "CrossBlock", "DropPath", "Mlp", "drop_path_rates", "CPU_GEMMS", "Linear", "cpu_gemm", "gemm_choices",
    "set_cpu_gemm", "RULES", "Segment", "TokenMask", "TokenType",
    "segments_of", "self_mask", "SpectrogramEmbed", "TubeletEmbed", "resample_pos_embed", "ModalityTokenizer",
]
