"""Rows 12-13 of docs/testing.md and the ASE bad inputs."""
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from mdpot import MDPotCalculator
from mdpot.data import TypeMapper, atoms_to_graph
from mdpot.testing import alloy, assert_allclose, molecule, slab, tolerance

ELEMENTS = ("Cu", "Au")  # the elements of the conftest models


# Row 12: calculator results equal a direct call of the deployed module.
@pytest.mark.parametrize("make", [alloy, slab, molecule], ids=["bulk", "slab", "molecule"])
def test_calculator_vs_model(deployed, calc, dtype, make):
    atoms = make(ELEMENTS, seed=21)
    atoms.calc = calc
    g = atoms_to_graph(atoms, deployed.r_max, TypeMapper(ELEMENTS))
    e, f, w, aw = deployed.module(g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, True)
    tol = tolerance("calculator", dtype)
    assert_allclose(atoms.get_potential_energy(), e.sum(), tol, "energy")
    assert_allclose(atoms.get_potential_energies(), e, tol, "energies")
    assert_allclose(atoms.get_forces(), f, tol, "forces")
    if atoms.cell.rank == 3:
        v = atoms.get_volume()
        w = w.numpy()
        voigt = -np.array([w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1]]) / v
        assert_allclose(atoms.get_stress(), voigt, tol, "stress")
        assert_allclose(atoms.get_stresses().sum(0), atoms.get_stress(), tol, "per-atom stresses sum")


# Row 13: the ASE contract.
def test_shapes_and_free_energy(calc):
    atoms = alloy(ELEMENTS, seed=22)
    atoms.calc = calc
    n = len(atoms)
    assert atoms.get_forces().shape == (n, 3)
    assert atoms.get_potential_energies().shape == (n,)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stresses().shape == (n, 6)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()


def test_caching_on_system_changes(calc, monkeypatch):
    atoms = alloy(ELEMENTS, seed=23)
    atoms.calc = calc
    calls = []
    original = calc.graph
    monkeypatch.setattr(calc, "graph", lambda a: calls.append(1) or original(a))
    e = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    assert len(calls) == 1, "energy, forces and stress come from one evaluation"
    atoms.positions[0, 0] += 0.01
    assert atoms.get_potential_energy() != e
    assert len(calls) == 2
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
    atoms.get_forces()
    assert len(calls) == 3
    atoms.numbers[0] = 29 if atoms.numbers[0] != 29 else 79
    atoms.get_forces()
    assert len(calls) == 4


@pytest.mark.parametrize("pbc", [(True, True, False), (True, False, False), (False, False, False), (False, True, True)])
def test_partial_periodicity_matches_explicit_images(calc, dtype, pbc):
    """Partial pbc equals a big non-periodic cluster made of explicit images (central cell's forces)."""
    atoms = alloy(ELEMENTS, seed=24, skew=0.0)
    atoms.pbc = pbc
    atoms.calc = calc
    reps = [3 if p else 1 for p in pbc]
    big = atoms.repeat(reps)
    big.pbc = False
    centre = sum(((reps[k] // 2) * atoms.cell.array[k] for k in range(3)), np.zeros(3))
    big.positions -= centre
    big.calc = calc
    n = len(atoms)
    index = np.ravel_multi_index(tuple(r // 2 for r in reps), reps) * n
    # replicated cells far from the centre see vacuum; only the central cell is a faithful copy when r_max < cell
    assert_allclose(big.get_forces()[index:index + n], atoms.get_forces(), tolerance("wrap", dtype) * 10, "forces vs images")


def test_cell_smaller_than_cutoff(calc, dtype):
    """A 1-atom FCC primitive cell (much smaller than r_max) equals its 4x4x4 supercell per atom."""
    from ase.build import bulk

    small = bulk("Cu", "fcc", a=3.7)
    big = small.repeat((4, 4, 4))
    small.calc = calc
    big.calc = calc
    tol = tolerance("wrap", dtype)
    assert_allclose(small.get_potential_energy() * 64, big.get_potential_energy(), tol, "energy per atom")
    assert_allclose(small.get_stress(), big.get_stress(), tol, "stress")


def test_unknown_element(calc):
    atoms = Atoms("CuFe", positions=[[0, 0, 0], [2.5, 0, 0]])
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"element\(s\) \['Fe'\] not in the model; the model knows \['Cu', 'Au'\]"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("cell", [None, [[5, 0, 0], [0, 5, 0], [0, 0, 0]]])
def test_stress_without_3d_cell(calc, cell):
    atoms = molecule(ELEMENTS, seed=25)
    if cell is not None:
        atoms.cell = cell
    atoms.calc = calc
    atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError, match="stress needs a 3-D cell"):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError, match="stress needs a 3-D cell"):
        atoms.get_stresses()


def test_empty_atoms(calc):
    atoms = Atoms()
    atoms.calc = calc
    with pytest.raises(ValueError, match="the Atoms object has no atoms"):
        atoms.get_potential_energy()


def test_overlapping_atoms(calc):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 1e-4]])
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"atoms 0 and 1 overlap \(distance 0.0001 Å"):
        atoms.get_potential_energy()


def test_nan_positions(calc):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 1]])
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"non-finite positions for atom indices \[1\]"):
        atoms.get_potential_energy()


def test_bad_model_argument():
    with pytest.raises(TypeError, match="model must be a path or LoadedModel, got int"):
        MDPotCalculator(3)
    with pytest.raises(FileNotFoundError, match="model file not found: /"):
        MDPotCalculator("does-not-exist.pt")


def test_loaded_model_is_not_mutated(deployed):
    """A LoadedModel handed to the calculator stays where it was: same module, same device; another device gets
    a copy."""
    device, module = deployed.device, deployed.module
    calc = MDPotCalculator(deployed)
    assert calc.model is deployed and deployed.device == device and deployed.module is module
    assert deployed.to(device) is deployed
    # another device: a copy (an eager model on the meta device stands in for a GPU here)
    from mdpot.deploy import eager_model
    from mdpot.testing import small_model

    eager = eager_model(small_model("allegro"))
    weight = next(eager.module.parameters())
    moved = eager.to("meta")
    assert moved is not eager and moved.device.type == "meta" and next(moved.module.parameters()).is_meta
    assert eager.device.type == "cpu" and next(eager.module.parameters()) is weight and not weight.is_meta


def test_malloc_tuning_is_the_calculators_explicit_choice(deployed, monkeypatch):
    """Loading a model has no process-wide side effect; the calculator tunes malloc unless told not to."""
    import mdpot.calculator
    from mdpot.deploy import load_model

    calls = []
    monkeypatch.setattr(mdpot.calculator, "_tune_malloc", lambda: calls.append(1))
    load_model(deployed.path)
    MDPotCalculator(deployed.path, tune_malloc=False)
    assert calls == []
    MDPotCalculator(deployed.path)
    assert calls == [1]
