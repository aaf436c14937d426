"""Reading trajectories: round trips, trajectory ids, keys, velocities, timestep checks, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from _md_data import emt_frames, frames_to_trajectory, wrapped
from longmd.data.trajectory import Trajectory, unwrap_positions
from longmd.io import DataError, finite_difference_velocities, read_trajectories
from longmd.io.read import read_frames
from longmd.units import fs_to_ase_time

ARRAYS = ("numbers", "masses", "positions", "cell", "pbc", "forces", "energy", "velocities")


@pytest.fixture(scope="module")
def frames():
    return emt_frames()


def _copy(frames, n=None):
    out = []
    for f in frames[:n]:
        c = f.copy()
        c.calc = SinglePointCalculator(c, **f.calc.results)
        out.append(c)
    return out


def _assert_same(a: Trajectory, b: Trajectory, atol: float) -> None:
    for key in ARRAYS:
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=0, atol=atol, err_msg=key)
    assert a.timestep_fs == b.timestep_fs


@pytest.mark.parametrize(("suffix", "atol"), [(".extxyz", 1e-6), (".extxyz.gz", 1e-6), (".traj", 0.0)])
def test_round_trip(frames, tmp_path: Path, suffix: str, atol: float) -> None:
    path = tmp_path / f"run{suffix}"
    ase.io.write(path, frames)
    (traj,) = read_trajectories(path)
    assert traj.name == path.name and len(traj) == len(frames)
    _assert_same(traj, frames_to_trajectory(frames), atol)
    assert traj.positions.dtype == np.float64 and traj.numbers.dtype == np.int64


def test_trajectory_back_to_atoms_round_trip(frames, tmp_path: Path) -> None:
    ref = frames_to_trajectory(frames)
    path = tmp_path / "again.extxyz"
    ase.io.write(path, [ref.atoms(t) for t in range(len(ref))])
    (traj,) = read_trajectories(path, timestep_fs=ref.timestep_fs)
    _assert_same(traj, ref, 1e-6)
    part = ref.slice(3, 7)
    assert len(part) == 4 and np.array_equal(part.positions, ref.positions[3:7])


def test_traj_id_splits_file_and_keeps_order(frames, tmp_path: Path) -> None:
    a, b = _copy(frames, 6), _copy(frames[::-1], 5)
    for f in a:
        f.info["traj_id"] = "a"
    for k, f in enumerate(b):
        f.info.update(traj_id=7, time_fs=2.0 * k)
        f.set_momenta(-f.get_momenta())  # the time-reversed run
    mixed = [a[0], b[0], b[1], a[1], a[2], b[2], a[3], a[4], b[3], b[4], a[5]]
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, mixed)
    trajs = read_trajectories([path], timestep_fs=2.0)
    assert [t.name for t in trajs] == [f"{path.name}::a", f"{path.name}::7"]
    np.testing.assert_allclose(trajs[0].positions, [f.positions for f in a], atol=1e-6)
    np.testing.assert_allclose(trajs[1].positions, [f.positions for f in b], atol=1e-6)


def test_custom_keys_and_velocities_array(frames, tmp_path: Path) -> None:
    out = []
    for f in frames[:4]:
        c = f.copy()
        c.info["REF_energy"] = f.calc.results["energy"]
        c.arrays["REF_forces"] = f.calc.results["forces"]
        c.arrays["vel"] = f.get_velocities()
        del c.arrays["momenta"]
        out.append(c)
    path = tmp_path / "keys.extxyz"
    ase.io.write(path, out)
    (traj,) = read_trajectories(path, energy_key="REF_energy", forces_key="REF_forces", velocities_key="vel")
    _assert_same(traj, frames_to_trajectory(frames[:4]), 1e-6)


def test_finite_difference_velocities_of_wrapped_verlet_run(frames, tmp_path: Path) -> None:
    """Central differences of velocity-Verlet positions reproduce its velocities exactly (interior)."""
    data = wrapped(frames)
    for f in data:
        del f.arrays["momenta"]
    assert np.abs(np.diff([f.positions for f in data], axis=0)).max() > 1.0  # atoms do cross the cell
    path = tmp_path / "nomomenta.extxyz"
    ase.io.write(path, data)
    with pytest.warns(UserWarning, match="finite differences"):
        (traj,) = read_trajectories(path)
    ref = frames_to_trajectory(frames).velocities
    np.testing.assert_allclose(traj.velocities[1:-1], ref[1:-1], rtol=0, atol=1e-6)
    scale = np.abs(ref).max()
    assert np.abs(traj.velocities[[0, -1]] - ref[[0, -1]]).max() < 0.05 * scale


def test_finite_difference_velocities_harmonic() -> None:
    """x = A sin(wt): central differences are second-order accurate, also at the ends."""
    dt_fs, w = 0.5, 2 * np.pi / fs_to_ase_time(40.0)
    t = np.arange(30) * fs_to_ase_time(dt_fs)
    amp = np.array([[0.3, -0.1, 0.2]])
    x = amp[None] * np.sin(w * t)[:, None, None] + 1.0
    v = finite_difference_velocities(x, np.eye(3)[None].repeat(30, 0) * 10, np.ones(3, bool), dt_fs)
    exact = amp[None] * w * np.cos(w * t)[:, None, None]
    h = w * fs_to_ase_time(dt_fs)
    np.testing.assert_allclose(v[1:-1], exact[1:-1] * np.sin(h) / h, atol=1e-12)
    assert np.abs(v - exact).max() < h**2 * np.abs(exact).max()


def test_unwrap_positions_triclinic_mixed_pbc() -> None:
    cell = np.array([[3.0, 0, 0], [1.0, 2.5, 0], [0, 0, 0]])
    pbc = np.array([True, True, False])
    steps = np.full((20, 1, 3), [0.13, 0.07, 0.05])
    path = np.cumsum(steps, axis=0)
    frac = path[..., :2] @ np.linalg.inv(cell[:2, :2])
    folded = path.copy()
    folded[..., :2] = (frac % 1.0) @ cell[:2, :2]
    np.testing.assert_allclose(unwrap_positions(folded, cell, pbc), path, atol=1e-12)


def test_single_frame_gets_zero_velocities_with_warning(frames, tmp_path: Path) -> None:
    one = _copy(frames, 1)
    del one[0].arrays["momenta"]
    path = tmp_path / "one.extxyz"
    ase.io.write(path, one)
    with pytest.warns(UserWarning, match="zero"):
        (traj,) = read_trajectories(path)
    assert len(traj) == 1 and not traj.velocities.any()


def test_timestep_from_argument_and_file_priority(frames, tmp_path: Path) -> None:
    data = _copy(frames, 3)
    for f in data:
        del f.info["timestep_fs"], f.info["time_fs"]
    path = tmp_path / "nodt.extxyz"
    ase.io.write(path, data)
    assert read_trajectories(path, timestep_fs=1.5)[0].timestep_fs == 1.5
    with pytest.raises(DataError, match="timestep_fs"):
        read_trajectories(path)
    path2 = tmp_path / "dt.extxyz"
    ase.io.write(path2, _copy(frames, 3))
    with pytest.warns(UserWarning, match="overrides"):
        assert read_trajectories(path2, timestep_fs=1.0)[0].timestep_fs == 2.0


def _bad(frames, case: str):
    """Frames with one defect in frame 2; returns (frames, key expected in the message)."""
    data = _copy(frames, 4)
    f = data[2]
    if case == "missing forces":
        f.calc = SinglePointCalculator(f, energy=f.calc.results["energy"])
        return data, "forces"
    if case == "missing energy":
        f.calc = SinglePointCalculator(f, forces=f.calc.results["forces"])
        return data, "energy"
    if case == "nan forces":
        forces = f.calc.results["forces"].copy()
        forces[1, 2] = np.nan
        f.calc = SinglePointCalculator(f, energy=f.calc.results["energy"], forces=forces)
        return data, "forces"
    if case == "inf energy":
        f.calc = SinglePointCalculator(f, energy=np.inf, forces=f.calc.results["forces"])
        return data, "energy"
    if case == "nan positions":
        f.positions[0, 0] = np.nan
        return data, "positions"
    if case == "nan momenta":
        f.arrays["momenta"][3, 1] = np.nan
        return data, "momenta"
    if case == "atom count":
        results = f.calc.results
        data[2] = f[:-1]
        data[2].calc = SinglePointCalculator(data[2], energy=results["energy"], forces=results["forces"][:-1])
        return data, "numbers"
    if case == "species order":
        f.numbers[[0, 1]] = [29, 79]
        return data, "numbers"
    if case == "time_fs jump":
        f.info["time_fs"] = 99.0
        return data, "time_fs"
    if case == "step jump":
        for k, g in enumerate(data):
            g.info["step"] = k * 10 + (5 if k == 2 else 0)
        return data, "step"
    if case == "timestep_fs differs":
        f.info["timestep_fs"] = 1.0
        return data, "timestep_fs"
    if case == "momenta missing in one frame":
        del f.arrays["momenta"]
        return data, "momenta/velocities"
    if case == "wrong shape":
        for g in data:
            g.arrays["REF_forces"] = np.zeros((len(g), 3))
        f.arrays["REF_forces"] = np.zeros((len(f), 2))
        return data, "REF_forces"
    raise AssertionError(case)


BAD_CASES = [
    "missing forces",
    "missing energy",
    "nan forces",
    "inf energy",
    "nan positions",
    "nan momenta",
    "atom count",
    "species order",
    "time_fs jump",
    "step jump",
    "timestep_fs differs",
    "momenta missing in one frame",
    "wrong shape",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_file_frame_key(frames, tmp_path: Path, case: str) -> None:
    data, key = _bad(frames, case)
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, data)
    kwargs = {"forces_key": "REF_forces"} if case == "wrong shape" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as info:
            read_trajectories(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "frame 2" in message and repr(key) in message, message
    assert isinstance(info.value, ValueError)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("this is\nnot a trajectory\n")
    with pytest.raises(DataError, match="garbage.extxyz.*cannot read"):
        read_trajectories(garbage, timestep_fs=1.0)
    with pytest.raises(DataError, match="nothere.xyz.*not found"):
        read_trajectories(tmp_path / "nothere.xyz", timestep_fs=1.0)


def test_trajectory_validates_shapes(frames) -> None:
    ref = frames_to_trajectory(frames)
    with pytest.raises(ValueError, match="forces"):
        Trajectory(**{**ref.__dict__, "forces": ref.forces[:, :-1]})
    with pytest.raises(ValueError, match="energy"):
        Trajectory(**{**ref.__dict__, "energy": ref.energy[:-1]})
    atoms = ref.atoms(4)
    np.testing.assert_allclose(atoms.get_velocities(), ref.velocities[4], atol=1e-12)
    assert atoms.get_potential_energy() == ref.energy[4]


@pytest.mark.parametrize("suffix", [".extxyz.xz", ".extxyz.gz", ".extxyz.bz2"])
def test_read_frames_of_compressed_files(frames, tmp_path: Path, suffix: str) -> None:
    """Compressed files are read in memory (ASE's seeking in them is quadratic); the last frame is right."""
    path = tmp_path / f"run{suffix}"
    ase.io.write(path, frames)
    last = read_frames(path, index=-1)
    assert np.allclose(last.positions, frames[-1].positions)
    assert len(read_frames(path)) == len(frames)


def test_read_structure_checks_the_frame(frames, tmp_path: Path) -> None:
    from longmd.io.read import read_structure

    path = tmp_path / "init.extxyz"
    ase.io.write(path, _copy(frames, 3))
    assert np.allclose(read_structure(path).positions, frames[2].positions, atol=1e-6)
    assert np.allclose(read_structure(path, 0).positions, frames[0].positions, atol=1e-6)
    bad = _copy(frames, 2)
    bad[0].positions[1, 2] = np.nan
    bad[1].set_momenta(np.full((len(bad[1]), 3), np.inf))
    ase.io.write(path, bad)
    with pytest.raises(DataError, match=r"init\.extxyz: frame 0: key 'positions': contains NaN or inf"):
        read_structure(path, 0)
    with pytest.raises(DataError, match=r"init\.extxyz: last frame: key 'momenta': contains NaN or inf"):
        read_structure(path)
    path.write_text("3\n\nH 0 0\n")
    with pytest.raises(DataError, match=r"init\.extxyz: cannot read"):
        read_structure(path)
    with pytest.raises(DataError, match=r"nothere\.xyz: file not found"):
        read_structure(tmp_path / "nothere.xyz")


def _renamed_keys(frames, energy: str, forces: str) -> list:
    """Copies whose energy and forces are stored only under ``energy`` (info) and ``forces`` (arrays)."""
    out = []
    for f in frames:
        c = f.copy()
        c.info[energy] = f.calc.results["energy"]
        c.arrays[forces] = f.calc.results["forces"].copy()
        out.append(c)
    return out


def test_mace_ref_keys_are_read_when_the_default_keys_are_absent(frames, tmp_path: Path) -> None:
    path = tmp_path / "mace.extxyz"
    ase.io.write(path, _renamed_keys(frames[:4], "REF_energy", "REF_forces"))
    with pytest.warns(UserWarning, match="reading MACE's 'REF_") as record:
        (traj,) = read_trajectories(path)
    assert [any(f"'{key}' instead" in str(w.message) for w in record) for key in ("REF_energy", "REF_forces")] == [
        True, True]
    _assert_same(traj, frames_to_trajectory(frames[:4]), 1e-6)


def test_missing_key_lists_what_the_file_holds_and_how_to_point_at_it(frames, tmp_path: Path, capsys) -> None:
    from longmd.cli import main

    path = tmp_path / "dft.extxyz"
    ase.io.write(path, _renamed_keys(frames[:4], "dft_energy", "dft_forces"))
    with pytest.raises(DataError) as info:
        read_trajectories(path)
    message = str(info.value)
    assert "frame 0: key 'energy': missing" in message and "'dft_energy'" in message, message
    assert "--energy-key" in message and "data.energy_key" in message
    with pytest.raises(DataError, match=r"key 'forces': missing.*'dft_forces'.*--forces-key or data.forces_key"):
        read_trajectories(path, energy_key="dft_energy")
    assert main(["info", str(path)]) == 2
    assert "'dft_energy'" in capsys.readouterr().err
    assert main(["info", str(path), "--energy-key", "dft_energy", "--forces-key", "dft_forces"]) == 0
    assert "1 trajectories, 4 frames" in capsys.readouterr().out


@pytest.fixture(scope="module")
def example_run() -> list:
    """The first 200 frames (0.5 fs) of the embedded example's trajectory 0, without 'step' and 'traj_id'."""
    from longmd.examples import resolve

    frames = [f for f in read_frames(resolve("example:h2_pd6_graphene"), index=":200") if f.info["traj_id"] == 0]
    for f in frames:
        del f.info["step"], f.info["traj_id"]
    return frames


def test_dropped_frames_and_wrong_timesteps_are_caught(example_run, tmp_path: Path, capsys) -> None:
    """Positions must follow from the previous frame by the velocities (trapezoid rule, unwrapped through the
    periodic cell): real AIMD at 0.5 and 2 fs passes; a dropped frame or a timestep off by 2x does not."""
    from longmd.cli import main

    def write(name: str, frames: list, dt: float | None) -> Path:
        path = tmp_path / name
        for f in frames:
            f.info.pop("timestep_fs", None)
            if dt is not None:
                f.info["timestep_fs"] = dt
        ase.io.write(path, frames)
        return path

    read_trajectories(write("every.extxyz", _copy(example_run), 0.5))
    read_trajectories(write("2fs.extxyz", _copy(example_run[::4]), 2.0))
    dropped = [f for k, f in enumerate(_copy(example_run)) if k != 120]
    with pytest.raises(DataError, match=r"dropped.extxyz: frame 120: key 'positions': do not follow from frame 119"):
        read_trajectories(write("dropped.extxyz", dropped, 0.5))
    nodt = write("nodt.extxyz", _copy(example_run), None)
    assert main(["info", str(nodt), "--timestep-fs", "0.5"]) == 0
    capsys.readouterr()
    for wrong in ("1.0", "0.25"):
        assert main(["info", str(nodt), "--timestep-fs", wrong]) == 2
        err = capsys.readouterr().err
        assert "nodt.extxyz: frame 1: key 'positions'" in err and "wrong timestep" in err, err
