"""A smooth vector function of one distance, tabulated: quintic Hermite interpolation on a uniform grid.

Used at inference for the distance-only block of the EGNN's first message layer, ``f(d) = W [sin(d w), cos(d w)]
+ b`` (2 n_rff features -> hidden): per edge, the sum of six coefficient rows weighted by 1, t, ..., t^5
(one fused ``embedding_bag``) replaces the sines, cosines and the (E, 2 n_rff) x (2 n_rff, hidden) product.
On each interval [d_k, d_k+1] the table holds the quintic that matches f, f' and f'' at both ends (all three exact,
from the closed form), so value and first derivative (the forces) are continuous and the error falls as h^6: 2048
points over 5 Å with frequencies of sigma = 4 rad/Å leave ~1e-12 of the derivative's RMS (measured; tests hold
forces to 1e-10 in float64).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Monomial coefficients (rows: t^0..t^5) of the quintic Hermite basis on [0, 1], columns: f0, f0', f0'', f1, f1',
# f1'' (derivatives per unit t).
_BASIS = torch.tensor([
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.5, 0.0, 0.0, 0.0],
    [-10.0, -6.0, -1.5, 10.0, -4.0, 0.5],
    [15.0, 8.0, 1.5, -15.0, 7.0, -1.0],
    [-6.0, -3.0, -0.5, 6.0, -3.0, 0.5],
], dtype=torch.float64)  # fmt: skip


class RadialTable(nn.Module):
    """``forward(d) -> (M, H)``: the tabulated function at distances ``d`` (M,), differentiable in ``d``.

    Build with :meth:`from_derivatives` from f, f', f'' at ``points`` grid distances over [0, r_max]; beyond r_max
    the last interval's quintic is extended (callers weight such edges by zero).
    """

    def __init__(self, coefficients: Tensor, r_max: float) -> None:
        super().__init__()
        self.register_buffer("coefficients", coefficients, persistent=False)  # (K, 6, H): rows t^0..t^5
        self.register_buffer("exponents", torch.arange(6, dtype=coefficients.dtype), persistent=False)
        self.register_buffer("offsets", torch.arange(6), persistent=False)
        self.r_max = float(r_max)
        self.intervals = int(coefficients.shape[0])

    @classmethod
    def from_derivatives(cls, values: Tensor, first: Tensor, second: Tensor, r_max: float) -> RadialTable:
        """From f, f', f'' (each (K + 1, H), per Å) at K + 1 equally spaced distances 0..r_max."""
        h = r_max / (values.shape[0] - 1)
        ends = [values[:-1], first[:-1] * h, second[:-1] * h * h, values[1:], first[1:] * h, second[1:] * h * h]
        stacked = torch.stack([e.to(torch.float64) for e in ends], dim=1)  # (K, 6, H)
        return cls(torch.einsum("pc,kch->kph", _BASIS.to(stacked.device), stacked), r_max)

    def forward(self, distance: Tensor) -> Tensor:
        x = distance * (self.intervals / self.r_max)
        index = x.detach().floor().clamp(0, self.intervals - 1).long()
        t = x - index.to(x.dtype)
        powers = t[:, None] ** self.exponents  # (M, 6): 1, t, ..., t^5
        rows = index[:, None] * 6 + self.offsets  # (M, 6) rows of the flat table
        # the weighted sum of each edge's six rows in one fused kernel (no (M, 6, H) copy), differentiable in t
        return nn.functional.embedding_bag(rows, self.coefficients.flatten(0, 1), per_sample_weights=powers,
                                           mode="sum")
