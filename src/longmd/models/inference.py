"""The model that MD, evaluation and the ASE calculator run: on their device and dtype, in eval mode, with the
cheaper inference path where one pays (tabulated EGNN distance blocks, :mod:`longmd.models.radial_table`).

Training never sees it: the caller's model is not modified (a copy is cast or tabulated), and the energies and
forces are those of the exact path to ~1e-12 relative in float64 (tested), so results do not depend on it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from longmd.models.egnn import EGNNTerm
from longmd.models.potential import Potential

TABULATE_MIN_FEATURES = 128
"""EGNN terms with at least this many Fourier features per layer (2 n_rff) get tables: there the (2 n_rff x
hidden) product per edge dominates (the paper's 512: batched MD 1.6-2.9x faster on CPU for 1-32 replicas,
``benchmarks/inference_tables.py``); the small preset's 64 features cost about what the table does (0.9x)."""


def _fits(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> bool:
    same_device = t.device.type == device.type and device.index in (None, t.device.index)
    return same_device and (not t.is_floating_point() or t.dtype == dtype)


def _worth_tabulating(model: nn.Module) -> list[EGNNTerm]:
    if not isinstance(model, Potential):
        return []
    return [t for t in model.terms.values() if isinstance(t, EGNNTerm) and not t.tabulated
            and 2 * t.hyperparameters()["n_rff"] >= TABULATE_MIN_FEATURES]


def inference_model(model: nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    tabulate: bool = True) -> tuple[nn.Module, torch.dtype]:
    """``model`` ready for inference on ``device`` in ``dtype`` (default: its own, else float64), and that dtype.

    Returns the caller's model (in eval mode) when it fits already and has nothing to tabulate, else a copy.
    """
    tensors = [*model.parameters(), *model.buffers()]
    if dtype is None:
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float64)
    target = torch.device(device)
    fits = all(_fits(t, target, dtype) for t in tensors)
    todo = _worth_tabulating(model) if tabulate else []
    if fits and not todo:
        return model.eval(), dtype
    model = copy.deepcopy(model) if fits else copy.deepcopy(model).to(device=target, dtype=dtype)
    for term in _worth_tabulating(model) if tabulate else []:
        term.tabulate()
    return model.eval(), dtype
