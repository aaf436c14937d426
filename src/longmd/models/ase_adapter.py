"""Any ASE calculator as an :class:`~longmd.models.base.EnergyModel`, so other potentials (MACE, CHGNet, EMT,
DFT codes) run under exactly the protocol of longmd models: the same integrator, rollouts and metrics.

    model = ASECalculatorModel.from_spec("ase:mace.calculators:MACECalculator?model_paths=x.model&device=cpu")
    model = ASECalculatorModel(EMT())            # or a calculator instance, or a callable returning one

Forces come from the calculator, not from autograd through a network: ``forward`` wraps the calculator in a
``torch.autograd.Function`` whose backward returns ``-forces * grad_output`` (and, when the cell needs a
gradient and the system is 3D periodic, the calculator's stress mapped onto the cell). So
:func:`longmd.models.base.predict` (forces = -dE/dx) and :func:`longmd.dynamics.rollout.rollout` work
unchanged. No double backward is needed for MD or evaluation; it is not possible (the calculator is a black
box), so a second derivative (``create_graph=True`` training through rollouts) raises instead of silently
returning zeros.

The neighbour list of the graph is ignored (the calculator builds its own); ``cutoff`` only sizes the Verlet
lists the MD engine builds anyway. Periodicity is not part of a :class:`~longmd.data.graph.Graph`: set
``pbc`` (constructor or attribute); ``None`` treats a direction as periodic when its cell vector is non-zero.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch
import yaml
from ase import Atoms
from torch import Tensor
from torch.autograd.function import once_differentiable

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel

PREFIX = "ase:"
SPEC_FORMAT = "ase:module.path:Name?key=value&key2=value2"


class ModelSpecError(ValueError):
    """An ASE calculator spec cannot be parsed or turned into a calculator; the message names the spec."""


def parse_ase_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``ase:module.path:Name?k=v&k2=v2`` -> (module, name, kwargs); values are parsed as YAML scalars.

    ``Name`` is a calculator class or any callable returning a calculator. ``x=1`` gives 1, ``x=cpu``
    "cpu", ``x=true`` True, ``x=[a,b]`` a list; quote to keep a string (``x='1'``).
    """
    if not isinstance(spec, str) or not spec.startswith(PREFIX):
        raise ModelSpecError(f"model spec {spec!r} must start with '{PREFIX}' (format: {SPEC_FORMAT})")
    body, _, query = spec[len(PREFIX) :].partition("?")
    module, sep, name = body.rpartition(":")
    if not sep or not module or not name:
        raise ModelSpecError(f"model spec {spec!r}: expected {SPEC_FORMAT}")
    if not all(part.isidentifier() for part in module.split(".")) or not all(
        part.isidentifier() for part in name.split(".")
    ):
        raise ModelSpecError(f"model spec {spec!r}: {module!r} / {name!r} is not a module path / attribute name")
    kwargs: dict[str, Any] = {}
    for key, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if not key.isidentifier():
            raise ModelSpecError(f"model spec {spec!r}: bad keyword {key!r}")
        try:
            kwargs[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as exc:
            raise ModelSpecError(f"model spec {spec!r}: cannot parse the value of {key!r}: {text!r}") from exc
    if query and not kwargs:
        raise ModelSpecError(f"model spec {spec!r}: cannot parse the keywords after '?' (use key=value&key2=value2)")
    return module, name, kwargs


def _is_calculator(obj: Any) -> bool:
    """Duck-typed: an ASE calculator instance (not a class) with energies and forces."""
    if isinstance(obj, type):
        return False
    return callable(getattr(obj, "get_potential_energy", None)) and callable(getattr(obj, "get_forces", None))


def calculator_from_spec(spec: str) -> Any:
    """Import the module of an ``ase:`` spec and call ``Name(**kwargs)``; clear errors naming the spec."""
    module_name, name, kwargs = parse_ase_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(f"model spec {spec!r}: cannot import {module_name!r} ({exc}); is it installed?") from exc
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"model spec {spec!r}: module {module_name!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    if _is_calculator(obj):  # a module-level calculator instance
        return obj
    if not callable(obj):
        raise ModelSpecError(f"model spec {spec!r}: {module_name}.{name} is neither a calculator nor callable")
    try:
        calc = obj(**kwargs)
    except Exception as exc:
        raise ModelSpecError(f"model spec {spec!r}: {module_name}.{name}(**{kwargs}) failed: {exc}") from exc
    if not _is_calculator(calc):
        raise ModelSpecError(
            f"model spec {spec!r}: {module_name}.{name}(...) returned {type(calc).__name__}, not an ASE calculator"
        )
    return calc


class _CalculatorEnergy(torch.autograd.Function):
    """Energies (B,) from the calculator; backward = -forces (and the stress term for the cell)."""

    @staticmethod
    def forward(ctx, positions: Tensor, cell: Tensor, model: ASECalculatorModel, numbers: Tensor, system: Tensor):
        want_stress = bool(ctx.needs_input_grad[1])
        with torch.enable_grad():  # torch-based calculators (MACE, CHGNet) take their own forces by autograd
            energies, forces, virials = model._evaluate(positions, cell, numbers, system, want_stress)
        ctx.save_for_backward(forces, virials, system)
        return energies

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energy: Tensor):
        forces, virials, system = ctx.saved_tensors
        grad_positions = -forces * grad_energy[system][:, None]
        grad_cell = None
        if ctx.needs_input_grad[1]:
            grad_cell = virials * grad_energy[:, None, None]
        return grad_positions, grad_cell, None, None, None


class ASECalculatorModel(EnergyModel):
    """An ASE calculator behind the :class:`EnergyModel` interface (see the module doc).

    Args:
        calculator: an ASE calculator, or a callable returning one (called once, lazily).
        cutoff: Å, for the Verlet lists of the MD engine only (the calculator ignores them). Default 5.
        pbc: periodicity of every system (bool or 3 bools); None infers it from non-zero cell vectors.
        spec: the ``ase:`` spec it came from (for reports).
    """

    def __init__(
        self,
        calculator: Any | Callable[[], Any],
        cutoff: float = 5.0,
        pbc: bool | tuple[bool, bool, bool] | np.ndarray | None = None,
        spec: str | None = None,
    ) -> None:
        super().__init__()
        if not _is_calculator(calculator) and not callable(calculator):
            raise TypeError(f"ASECalculatorModel needs an ASE calculator or a callable, got {type(calculator)}")
        # Kept out of nn.Module's registry, so .to()/state_dict() never touch a torch-based calculator.
        self.__dict__["_calculator"] = calculator if _is_calculator(calculator) else None
        self.__dict__["_factory"] = None if self._calculator is not None else calculator
        self.cutoff = float(cutoff)
        self.pbc = pbc
        self.spec = spec
        self.calls = 0

    @classmethod
    def from_spec(cls, spec: str, cutoff: float = 5.0, pbc: Any = None) -> ASECalculatorModel:
        """Build from ``ase:module.path:Name?key=value&...`` (see :func:`parse_ase_spec`)."""
        return cls(calculator_from_spec(spec), cutoff=cutoff, pbc=pbc, spec=spec)

    @property
    def calculator(self) -> Any:
        if self._calculator is None:
            calc = self._factory()
            if not _is_calculator(calc):
                raise TypeError(f"the calculator factory returned {type(calc).__name__}, not an ASE calculator")
            self.__dict__["_calculator"] = calc
        return self._calculator

    def hyperparameters(self) -> dict[str, Any]:
        raise NotImplementedError("an ASE calculator model cannot be saved as a longmd model; keep its spec")

    def extra_repr(self) -> str:
        kind = type(self._calculator or self._factory).__name__
        return f"spec={self.spec!r}, calculator={kind}, cutoff={self.cutoff}"

    def _pbc_of(self, cell: np.ndarray) -> np.ndarray:
        if self.pbc is None:
            return np.linalg.norm(cell, axis=1) > 0
        return np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()

    def _evaluate(
        self, positions: Tensor, cell: Tensor, numbers: Tensor, system: Tensor, want_stress: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Energies (B,), forces (N, 3) and cell gradients dE/dcell (B, 3, 3) (zeros unless ``want_stress``)."""
        pos = positions.detach().cpu().double().numpy()
        cells = cell.detach().cpu().double().numpy()
        nums = numbers.detach().cpu().numpy()
        counts = torch.bincount(system.detach().cpu(), minlength=cells.shape[0]).numpy()
        energies = np.zeros(len(cells))
        forces = np.zeros_like(pos)
        grad_cell = np.zeros_like(cells)
        first = 0
        for b, n in enumerate(counts):
            sl = slice(first, first + int(n))
            first += int(n)
            pbc = self._pbc_of(cells[b])
            atoms = Atoms(numbers=nums[sl], positions=pos[sl], cell=cells[b], pbc=pbc)
            atoms.calc = self.calculator
            energies[b] = atoms.get_potential_energy()
            forces[sl] = atoms.get_forces()
            self.calls += 1
            if want_stress and pbc.all() and abs(np.linalg.det(cells[b])) > 1e-12:
                # Homogeneous strain: dE/dε = V σ = sum_i x_i ⊗ dE/dx_i + cell^T dE/dcell; solve for dE/dcell.
                virial = atoms.get_volume() * atoms.get_stress(voigt=False)
                rhs = virial + pos[sl].T @ forces[sl]
                grad_cell[b] = np.linalg.solve(cells[b].T, rhs)
        like = {"dtype": positions.dtype, "device": positions.device}
        return torch.tensor(energies, **like), torch.tensor(forces, **like), torch.tensor(grad_cell, **like)

    def forward(self, graph: Graph) -> Tensor:
        return _CalculatorEnergy.apply(graph.positions, graph.cell, self, graph.numbers, graph.system)
