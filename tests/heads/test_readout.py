"""Zorro's readout (heads/readout.py): one learned query per output, each reading only its token
types, so the audio and video outputs stay modality-pure; a query with nothing to read is not run."""

import torch

from avfusion.heads.readout import OUTPUTS, Readout, readout_outputs
from avfusion.layers.masks import TokenType, segments_of

A, V, F = TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION
D = 16


def _readout() -> Readout:
    return Readout(D, num_heads=2, mlp_dim=32).eval()


def test_no_fusion_output_without_fusion_tokens():
    assert readout_outputs(4) == OUTPUTS == ("audio", "video", "fusion", "global")
    assert readout_outputs(0) == ("audio", "video", "global")


def test_each_output_reads_only_its_token_types():
    readout = _readout()
    segments = segments_of([A, V, F], [5, 7, 3])
    spans = {"audio": (0, 5), "video": (5, 12), "fusion": (12, 15)}
    x = torch.randn(2, 15, D)
    with torch.no_grad():
        ref = readout(x, segments)
        assert set(ref) == set(OUTPUTS) and all(v.shape == (2, D) for v in ref.values())
        for changed, (start, stop) in spans.items():
            y = x.clone()
            y[:, start:stop] += torch.randn(2, stop - start, D)
            out = readout(y, segments)
            for name in spans:
                if name == changed:
                    assert (out[name] - ref[name]).abs().max() > 1e-3, name
                else:
                    torch.testing.assert_close(out[name], ref[name], rtol=0, atol=1e-6)
            assert (out["global"] - ref["global"]).abs().max() > 1e-3  # the global query reads everything


def test_a_query_with_nothing_to_read_is_not_run():
    readout = _readout()
    segments = segments_of([A, V, F], [5, 0, 3])  # no video tokens
    assert readout.runnable(segments) == ("audio", "fusion", "global")
    out = readout(torch.randn(2, 8, D), segments)
    assert set(out) == {"audio", "fusion", "global"}
    no_fusion = Readout(D, num_heads=2, mlp_dim=32, outputs=readout_outputs(0))
    assert set(no_fusion(torch.randn(2, 12, D), segments_of([A, V], [5, 7]))) == {"audio", "video", "global"}
