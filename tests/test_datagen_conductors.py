"""The Li-ion conductor recipe (GraNNField study) with cheap ASE calculators standing in for CHGNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk as ase_bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from longmd.datagen import common, conductors
from longmd.datagen.cli import temperature_list
from longmd.io.read import read_trajectories


def test_lgps_cell_is_the_published_ordered_cell() -> None:
    """50 atoms of Li10GeP2S12 (two formula units) at the Materials Project cell: its density and closest
    approach (a Li-S or P-S contact, ~2 Å) are those of the published structure."""
    atoms = conductors.build_cell("lgps")
    symbols = atoms.get_chemical_symbols()
    assert len(atoms) == 50 and {el: symbols.count(el) for el in set(symbols)} == {"Li": 20, "Ge": 2, "P": 4, "S": 24}
    assert conductors.density_g_cm3(atoms) == pytest.approx(1.977, abs=0.005)  # PBE cell; experiment ~2.04
    assert conductors.min_distance(atoms) == pytest.approx(2.02, abs=0.01)
    assert atoms.cell.cellpar()[:3] == pytest.approx([8.590, 8.880, 12.975], abs=1e-3)
    assert "Kamaya" in conductors.MATERIALS["lgps"].source and "mp-696138" in conductors.MATERIALS["lgps"].source


def _lj():
    return LennardJones(sigma=2.0, epsilon=0.01, rc=5.0, smooth=True)


def test_recipe_runs_resumes_and_writes_metadata(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "chgnet_calculator", _lj)
    monkeypatch.setattr(common, "reference_versions", lambda: {"model": "Lennard-Jones (test stand-in)"})
    protocol = conductors.protocol_for("lgps", temperatures_K=(900, 1200), runs_per_temperature=2, n_frames=4,
                                       equilibrate_steps=2, relax_steps=2)
    path = conductors.generate(tmp_path, protocol, progress=False)
    meta = json.loads((tmp_path / "lgps.json").read_text())
    assert meta["n_frames"] == 16 and meta["n_atoms"] == 50 and "Kamaya" in meta["structure_source"]
    assert [(t["target_K"], t["repeat"]) for t in meta["trajectories"]] == [(900, 0), (1200, 0), (900, 1), (1200, 1)]
    assert meta["start"]["formula"] == "Ge2Li20P4S24" and meta["generation_time_s"] > 0
    assert np.isfinite(meta["max_abs_drift_meV_per_atom_ps"]) and meta["protocol"]["timestep_fs"] == 2.0
    trajectories = read_trajectories(path)
    assert [len(t) for t in trajectories] == [4] * 4 and trajectories[0].timestep_fs == 2.0
    assert np.all(np.isfinite(trajectories[1].forces)) and all(trajectories[0].pbc)
    first = (tmp_path / "work" / "traj_000.extxyz").stat().st_mtime_ns
    (tmp_path / "work" / "traj_003.extxyz").unlink()
    conductors.generate(tmp_path, protocol, progress=False)
    assert (tmp_path / "work" / "traj_000.extxyz").stat().st_mtime_ns == first
    assert (tmp_path / "work" / "traj_003.extxyz").exists()
    with pytest.raises(ValueError, match="another protocol"):
        conductors.generate(tmp_path, conductors.protocol_for("lgps", n_frames=5), progress=False)


def test_conserved_energy_matches_ase_and_is_conserved() -> None:
    """Our conserved quantity equals ASE's where the calculator gives ``free_energy`` (EMT), and a Nosé-Hoover
    chain run holds it to well under a meV/atom while the kinetic energy fluctuates far more."""
    atoms = ase_bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.calc = EMT()
    common.thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(0))
    protocol = conductors.protocol_for("lgps", timestep_fs=2.0)
    dyn = conductors._nose_hoover(atoms, protocol, 600.0)
    values, kinetic = [], []
    for _ in range(100):
        dyn.run(1)
        assert conductors.conserved_energy(dyn) == pytest.approx(dyn.get_conserved_energy(), abs=1e-9)
        values.append(conductors.conserved_energy(dyn))
        kinetic.append(atoms.get_kinetic_energy())
    assert np.ptp(values) / len(atoms) < 1e-3 and np.ptp(kinetic) > 10 * np.ptp(values)


def test_bad_options_are_refused_with_the_option_named() -> None:
    with pytest.raises(ValueError, match="unknown material 'lgpz'"):
        conductors.protocol_for("lgpz")
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        conductors.protocol_for("lgps", temperatures_K=(900, -5))
    with pytest.raises(ValueError, match="n_frames too small"):
        conductors.protocol_for("lgps", n_frames=1)
    with pytest.raises(ValueError, match="runs_per_temperature too small"):
        conductors.protocol_for("lgps", runs_per_temperature=0)
    assert temperature_list("800,1000,1200") == (800.0, 1000.0, 1200.0)
    for text in ("800,hot", "900,900", "0,900"):
        with pytest.raises(ValueError, match="--temperatures"):
            temperature_list(text)


def test_runs_cover_every_temperature_before_the_repeats() -> None:
    protocol = conductors.protocol_for("lgps", temperatures_K=(800, 1000, 1200), runs_per_temperature=2)
    assert protocol.n_trajectories == 6
    assert [conductors.run_setting(protocol, i) for i in range(6)] == [
        (800.0, 0), (1000.0, 0), (1200.0, 0), (800.0, 1), (1000.0, 1), (1200.0, 1)]


def test_transfer_materials_take_a_user_cell_checked_and_sized(tmp_path) -> None:
    """li3ps4 / li4ges4 ship no coordinates: without --cell they are refused; a cell of the wrong composition or
    with partially occupied sites is refused naming the file; a beta-Li3PS4-sized cell (12.8 x 8.2 x 6.1 Å, Z = 4)
    is doubled along its thin c axis to 64 atoms."""
    from ase import Atoms
    from ase.io import write

    with pytest.raises(ValueError, match="li3ps4 needs --cell FILE"):
        conductors.protocol_for("li3ps4")
    with pytest.raises(ValueError, match="no such file"):
        conductors.protocol_for("li4ges4", cell_file=str(tmp_path / "missing.cif"))
    rng = np.random.default_rng(0)
    good = Atoms("Li12P4S16", scaled_positions=rng.random((32, 3)), cell=[12.8, 8.2, 6.1], pbc=True)
    write(tmp_path / "li3ps4.vasp", good, format="vasp")
    atoms = conductors.build_cell("li3ps4", str(tmp_path / "li3ps4.vasp"))
    assert conductors.auto_repeat(good) == (1, 1, 2) and len(atoms) == 64
    assert atoms.get_chemical_formula() == "Li24P8S32"
    write(tmp_path / "wrong.vasp", Atoms("Li12Ge4S16", scaled_positions=rng.random((32, 3)), cell=[14, 7.8, 6.1]),
          format="vasp")
    with pytest.raises(ValueError, match=r"wrong.vasp: composition .* not a multiple of li3ps4"):
        conductors.build_cell("li3ps4", str(tmp_path / "wrong.vasp"))
    (tmp_path / "partial.cif").write_text(
        "data_x\n_cell_length_a 5\n_cell_length_b 5\n_cell_length_c 5\n_cell_angle_alpha 90\n_cell_angle_beta 90\n"
        "_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
        "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n"
        "Li1 Li 0 0 0 0.5\nP1 P 0.5 0.5 0.5 1\nS1 S 0.25 0.25 0.25 1\n")
    with pytest.raises(ValueError, match="partial.cif: partially occupied"):
        conductors.build_cell("li3ps4", str(tmp_path / "partial.cif"))
