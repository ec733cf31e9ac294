from __future__ import annotations

import pytest
import torch

from medverse.model.attention import from_tokens, sincos_3d, to_tokens, token_means


@pytest.mark.parametrize("layout", ["strided", "contiguous"])
def test_tokens_round_trip(layout: str) -> None:
    x = torch.randn(2, 3, 8, 12, 16)
    tokens = to_tokens(x, 4, layout)
    assert tokens.shape == (2, 64, 3 * 2 * 3 * 4)
    assert torch.equal(from_tokens(tokens, x.shape, 4, layout), x)


def test_strided_token_is_mod_p_lattice() -> None:
    x = torch.randn(1, 2, 8, 8, 8)
    a, b, c = 1, 2, 3
    token = to_tokens(x, 4, "strided")[0, a * 16 + b * 4 + c]
    assert torch.equal(token, x[0, :, a::4, b::4, c::4].movedim(0, -1).reshape(-1))
    assert torch.allclose(
        token_means(x, 4, "strided")[0, a * 16 + b * 4 + c],
        x[0, :, a::4, b::4, c::4].mean((1, 2, 3)),
    )


def test_contiguous_token_is_block() -> None:
    x = torch.randn(1, 2, 8, 8, 8)
    token = to_tokens(x, 4, "contiguous")[0, 1 * 16 + 2 * 4 + 3]
    assert torch.equal(token, x[0, :, 2:4, 4:6, 6:8].movedim(0, -1).reshape(-1))


def test_sincos_rows() -> None:
    table = sincos_3d(4, 66)
    assert table.shape == (64, 66)
    h, w, d = 1, 2, 3
    row = table[h * 16 + w * 4 + d]
    omega = 1.0 / 10000 ** (torch.arange(11, dtype=torch.float64) / 11)
    expect = torch.cat(
        [
            (w * omega).sin(),
            (w * omega).cos(),
            (h * omega).sin(),
            (h * omega).cos(),
            (d * omega).sin(),
            (d * omega).cos(),
        ]
    )
    assert torch.allclose(row.double(), expect, atol=1e-6)
