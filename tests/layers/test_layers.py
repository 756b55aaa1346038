import pytest
import torch

from avfusion.layers import Block, DropPath, SpectrogramEmbed, TubeletEmbed, drop_path_rates, resample_pos_embed


def test_tubelet_embed_shape_and_token_order():
    emb = TubeletEmbed(8, num_frames=4, image_size=(16, 24), tubelet=(2, 8, 8))
    assert emb.grid == (2, 2, 3) and emb.num_patches == 12
    x = torch.zeros(1, 3, 4, 16, 24)
    x[:, :, 2:4, 8:16, 16:24] = 1.0  # the last tubelet (t=1, h=1, w=2)
    y = emb(x) - emb(torch.zeros_like(x))  # (1, 12, 8): only the changed tubelet moves
    moved = y.abs().sum(-1)[0].nonzero().flatten().tolist()
    assert moved == [11]  # t-major, then h, then w


def test_spectrogram_embed_time_major_order():
    emb = SpectrogramEmbed(8, spec_size=(32, 16), patch=(8, 4))
    assert emb.grid == (4, 4)
    x = torch.zeros(1, 32, 16)
    x[:, 8:16, 0:4] = 1.0  # time patch 1, mel patch 0
    moved = (emb(x) - emb(torch.zeros_like(x))).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert moved == [4]


def test_embed_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="not divisible"):
        TubeletEmbed(8, 5, (16, 16), (2, 8, 8))
    emb = SpectrogramEmbed(8, (32, 16), (8, 4))
    with pytest.raises(ValueError, match=r"audio must be \(B, 32, 16\)"):
        emb(torch.zeros(1, 30, 16))


def test_resample_pos_embed_identity_and_interpolation():
    pe = torch.randn(1, 1 + 4 * 6, 8)
    assert torch.equal(resample_pos_embed(pe, (4, 6), (4, 6), 1), pe)
    out = resample_pos_embed(pe, (4, 6), (8, 12), 1)
    assert out.shape == (1, 1 + 96, 8)
    assert torch.equal(out[:, :1], pe[:, :1])  # CLS kept
    # A constant grid stays constant under bilinear resampling.
    const = torch.ones(1, 24, 8) * 3.0
    torch.testing.assert_close(resample_pos_embed(const, (4, 6), (5, 7)), torch.full((1, 35, 8), 3.0))
    with pytest.raises(ValueError, match="expected 1 \\+ 20"):
        resample_pos_embed(pe, (4, 5), (8, 10), 1)


def test_drop_path_schedule_and_behaviour():
    assert drop_path_rates(4, 0.3) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    dp = DropPath(0.5).train()
    x = torch.ones(1000, 3)
    y = dp(x)
    kept = (y[:, 0] != 0).float().mean().item()
    assert 0.4 < kept < 0.6 and set(y.unique().tolist()) <= {0.0, 2.0}  # rescaled by 1 / (1 - p)
    assert torch.equal(dp.eval()(x), x)


def test_block_options():
    b = Block(16, 2, 32, ln_eps=1e-6, gelu="tanh")
    assert b.norm1.eps == 1e-6 and b.mlp.act.approximate == "tanh"
    b2 = Block(16, 2, 32, ln_eps=1e-5, gelu="none")
    assert b2.norm1.eps == 1e-5 and b2.mlp.act.approximate == "none"
    assert b(torch.randn(2, 5, 16)).shape == (2, 5, 16)
