"""A committee of stride predictors: the mean step, and the members' spread as its uncertainty.

Direct predictors fail silently outside their training data (nothing like an energy tells that a step is
wrong). Members trained alike but from other seeds agree where the data was and disagree away from it, so the
spread of their predicted positions is a cheap warning: per system, the largest over atoms of the standard
deviation of the members' new positions (Å), kept in the state's per-system extra ``stride_spread_A`` each step
(and so in the thermo log), and a stop reason when it passes ``simulate``'s ``max_spread_A``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from longmd.models.stride import StridePredictor

SPREAD = "stride_spread_A"


class Committee(StridePredictor):
    """Mean of ``members`` (same stride and cutoff-compatible), with their spread (see the module doc)."""

    def __init__(self, members: Sequence[StridePredictor]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 stride predictors, got {len(members)}")
        strides = {float(m.timestep_fs) for m in members}
        if len(strides) != 1:
            raise ValueError(f"committee members must share one stride, got {sorted(strides)} fs")
        self.members = nn.ModuleList(members)
        self.timestep_fs = strides.pop()
        cutoffs = [m.cutoff for m in members]
        self.cutoff = None if all(c is None for c in cutoffs) else max(c or 0.0 for c in cutoffs)

    def summary(self) -> str:
        return f"Committee of {len(self.members)} stride predictors ({self.timestep_fs:g} fs)"

    def check_state(self, state) -> None:
        for m in self.members:
            check = getattr(m, "check_state", None)
            if check is not None:
                check(state)

    def forward(self, state, edges=None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        outputs = [m(state, edges) for m in self.members]
        dq = torch.stack([o[0] for o in outputs])  # (M, N, 3)
        p = torch.stack([o[1] for o in outputs])
        spread_atom = dq.std(dim=0, unbiased=True).norm(dim=-1)  # (N,) Å
        spread = torch.zeros(state.n_systems, dtype=dq.dtype, device=dq.device).scatter_reduce(
            0, state.system, spread_atom, reduce="amax")
        return dq.mean(0), p.mean(0), {SPREAD: spread.detach()}
