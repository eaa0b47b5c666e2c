"""Rows 1-11 of docs/testing.md for every architecture, float64 and float32, through the shipped test kit."""
import numpy as np
import pytest
from ase import Atoms

from mdpot.data import Batch, TypeMapper, atoms_to_graph, evaluate
from mdpot.deploy import eager_model, load_model
from mdpot.deploy import metadata as md
from mdpot.testing import (
    alloy,
    assert_allclose,
    assert_equivariant,
    assert_forces_match_fd,
    assert_momentum,
    assert_stress_matches_fd,
    compare_contract,
    molecule,
    slab,
    tolerance,
)

ELEMENTS = ("Cu", "Au")  # the elements of the conftest models


# Row 1: eager vs deployed.
@pytest.mark.parametrize("make", [alloy, slab, molecule], ids=["bulk", "slab", "molecule"])
def test_deploy_round_trip(energy_model, deployed, dtype, make):
    eager = eager_model(energy_model, dtype)
    graph = atoms_to_graph(make(ELEMENTS, seed=3), deployed.r_max, TypeMapper(ELEMENTS))
    compare_contract(deployed.module, eager.module, graph, dtype, what="deployed vs eager")


# Row 2: metadata round trip.
def test_metadata_round_trip(energy_model, deployed, dtype, model_format):
    expected = eager_model(energy_model, dtype).metadata
    again = load_model(deployed.path).metadata
    # TorchScript files are deployed with the fused kernels by default (version 8); the session's packages with
    # the reference (version 3) but for one case with the fused kernels (version 6, mdpot.testing.aoti)
    from mdpot.testing.aoti import case_kernels

    kernels = "fused" if model_format == "torchscript" else case_kernels(energy_model.config.architecture, dtype)
    versions = {("torchscript", "fused"): md.FUSED_FORMAT_VERSION, ("aoti", "reference"): md.AOTI_FORMAT_VERSION,
                ("aoti", "fused"): md.AOTI_FUSED_FORMAT_VERSION}
    assert again[md.FORMAT_VERSION_KEY] == versions[model_format, kernels]
    assert again.get(md.KERNELS_KEY, "reference") == kernels
    expected[md.FORMAT_VERSION_KEY] = again[md.FORMAT_VERSION_KEY]
    for key in md.ALL_KEYS:
        if key == md.WEIGHTS_SHA256:
            assert len(again[key]) == 64
            continue
        if key == md.PROVENANCE:
            assert again[key] == {}
            continue
        assert again[key] == expected[key], key
    assert again[md.ELEMENTS] == ELEMENTS
    assert again[md.R_MAX] == energy_model.config.r_max
    assert again[md.MODEL_DTYPE] == dtype


# Row 3: equivariance (rotation, reflection, translation, permutation).
@pytest.mark.parametrize("kind", ["rotation", "reflection", "translation", "permutation"])
def test_equivariance(calc, dtype, kind):
    assert_equivariant(calc, alloy(ELEMENTS, seed=4), dtype, kinds=[kind])


class _Broken:
    """A contract module with one physics law broken on purpose, to show the kit's asserts catch it."""

    def __init__(self, module, fault):
        self.module, self.fault = module, fault

    def __call__(self, pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial):
        import torch

        e, f, w, aw = self.module(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)
        if self.fault == "external field":  # a uniform force: not equivariant, nonzero total, not -dE/dx
            f = f + torch.tensor([0.1, 0.0, 0.0], dtype=f.dtype)
        else:  # "forces scaled": still equivariant with zero total, but not the energy's gradient
            f = f * 1.01
        return e, f, w, aw


@pytest.mark.parametrize("fault,check", [("external field", "equivariance"), ("external field", "momentum"),
                                         ("forces scaled", "fd_forces")])
def test_kit_catches_broken_physics(energy_model, fault, check):
    from mdpot.testing import ContractCalculator

    eager = eager_model(energy_model, "float64")
    good = ContractCalculator(eager.module, eager.elements, eager.r_max)
    bad = ContractCalculator(_Broken(eager.module, fault), eager.elements, eager.r_max)
    atoms = alloy(ELEMENTS, seed=4)
    run = {"equivariance": lambda c: assert_equivariant(c, atoms, "float64", kinds=["rotation"]),
           "momentum": lambda c: assert_momentum(c, atoms, "float64"),
           "fd_forces": lambda c: assert_forces_match_fd(c, atoms, "float64")}[check]
    run(good)
    run(eager)  # a loaded model directly, through its contract module
    with pytest.raises(AssertionError, match="max \\|error\\| .* exceeds tolerance"):
        run(bad)


# Row 4: forces against central differences.
@pytest.mark.parametrize("make", [alloy, slab, molecule], ids=["bulk", "slab", "molecule"])
def test_finite_difference_forces(calc, dtype, make):
    assert_forces_match_fd(calc, make(ELEMENTS, seed=5), dtype)


# Row 5: stress against numerical strain derivatives on a skewed, rattled cell.
def test_finite_difference_stress(calc, dtype):
    atoms = alloy(ELEMENTS, seed=6, skew=0.25)
    assert_stress_matches_fd(calc, atoms, dtype)
    atoms.calc = calc
    s = atoms.get_stress()
    assert_allclose(atoms.get_stresses().sum(axis=0), s, 1e-12 if dtype == "float64" else 1e-6, "sum of per-atom stresses")


# Row 6: locality.
def test_locality(energy_model, calc, dtype):
    r_max = energy_model.config.r_max
    tol = tolerance("locality", dtype)
    base = molecule(ELEMENTS, n_atoms=6, seed=2)
    far = base.copy()
    far += Atoms("Au", positions=[base.positions.max(axis=0) + [r_max + 0.05, 0.0, 0.0]])
    # the added atom sits beyond r_max of every other atom
    assert np.linalg.norm(base.positions - far.positions[-1], axis=1).min() > r_max
    base.calc = calc
    far.calc = calc
    assert_allclose(far.get_forces()[:-1], base.get_forces(), tol, "forces with an atom beyond the receptive field")
    assert_allclose(far.get_forces()[-1], np.zeros(3), tol, "force on an isolated far atom")
    assert_allclose(far.get_potential_energies()[:-1], base.get_potential_energies(), tol, "per-atom energies")
    # Smooth at r_max: a dimer's energy and force go continuously to the isolated-atom values.
    e_iso = sum(energy_model.config.per_element_energy_shift)
    energies, forces = [], []
    for r in (r_max - 1e-3, r_max - 1e-4, r_max + 1e-4):
        dimer = Atoms("CuAu", positions=[[0, 0, 0], [r, 0, 0]])
        dimer.calc = calc
        energies.append(dimer.get_potential_energy() - e_iso)
        forces.append(np.abs(dimer.get_forces()).max())
    assert energies[2] == pytest.approx(0.0, abs=tol) and forces[2] == pytest.approx(0.0, abs=tol)
    assert abs(energies[1]) < max(1e-8, 10 * tol) and abs(energies[0]) < 1e-5
    assert forces[1] < max(1e-6, 10 * tol)


def test_receptive_field(energy_model, calc, dtype):
    """Row 6 for message passing: atom 0's energy feels an atom k hops down a chain iff it lies within the
    receptive field (r_max for Allegro, num_layers * r_max for NequIP); beyond it, exactly nothing."""
    cfg = energy_model.config
    spacing = 0.8 * cfg.r_max
    n = int(cfg.receptive_field / spacing) + 3
    # a zigzag chain: only consecutive atoms are within r_max of each other
    pos = np.array([[k * spacing, 0.3 * (k % 2), 0.0] for k in range(n)])
    assert np.linalg.norm(pos[2] - pos[0]) > cfg.r_max
    base = Atoms("".join(ELEMENTS[k % 2] for k in range(n)), positions=pos)
    base.calc = calc
    e0 = base.get_potential_energies()[0]
    tol = tolerance("locality", dtype)
    for k in range(1, n):
        moved = base.copy()
        moved.positions[k] += [0.05, 0.2, 0.1]
        moved.calc = calc
        change = abs(moved.get_potential_energies()[0] - e0)
        if k * spacing < cfg.receptive_field:
            # two hops through small random weights move E_0 by ~1e-9 eV: only float64 resolves that
            if dtype == "float64" or k == 1:
                assert change > 1e-12, f"atom {k} at {k * spacing:.2f} A is inside the receptive field but has no effect"
        else:
            assert change <= (0.0 if dtype == "float64" else tol), (
                f"atom {k} at {k * spacing:.2f} A, beyond the receptive field {cfg.receptive_field} A, changed E_0 by {change:.3g} eV")


def test_energies_of_a_subset_are_exact(energy_model):
    """Asking for the energies of the first n_local atoms only (LAMMPS: local atoms before ghosts) lets a
    message-passing model skip work far from them; those energies and the forces from their sum are exact."""
    import torch

    from mdpot.models import Potential

    atoms = molecule(ELEMENTS, n_atoms=14, spacing=2.2, seed=21)
    g = atoms_to_graph(atoms, energy_model.config.r_max, TypeMapper(ELEMENTS))
    pos = g.pos.clone().requires_grad_(True)
    vec = pos.index_select(0, g.edge_index[1]) - pos.index_select(0, g.edge_index[0]) + g.edge_shift
    n_local = 3
    full = energy_model(vec, g.edge_index, g.atom_type)[:n_local]
    forces_full = -torch.autograd.grad(full.sum(), pos)[0]
    e, f, _, _ = Potential(energy_model)(g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, False)
    shift = torch.tensor(energy_model.config.per_element_energy_shift, dtype=torch.float64)[g.atom_type[:n_local]]
    assert_allclose(e, full.detach() + shift, 1e-12, "energies of the first n_local atoms")
    assert_allclose(f, forces_full, 1e-12, "forces from the first n_local atoms' energies")
    assert forces_full[n_local:].abs().max() > 1e-6, "vacuous: the other atoms feel nothing"


# Row 7: separability.
def test_separability(calc, dtype):
    a = molecule(ELEMENTS, n_atoms=7, seed=8)
    b = molecule(ELEMENTS, n_atoms=5, seed=9)
    b.positions += [40.0, 0.0, 0.0]
    both = a + b
    for x in (a, b, both):
        x.calc = calc
    assert_allclose(both.get_potential_energy(), a.get_potential_energy() + b.get_potential_energy(),
                    tolerance("separability", dtype), "E(A+B) vs E(A)+E(B)")


# Row 8: wrap invariance.
def test_wrap_invariance(calc, dtype):
    atoms = alloy(ELEMENTS, seed=10)
    atoms.calc = calc
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    shifted = atoms.copy()
    images = np.random.default_rng(0).integers(-3, 4, size=(len(atoms), 3))
    shifted.positions += images @ atoms.cell.array
    shifted.calc = calc
    tol = tolerance("wrap", dtype)
    assert_allclose(shifted.get_potential_energy(), e0, tol, "energy, unwrapped")
    assert_allclose(shifted.get_forces(), f0, tol, "forces, unwrapped")
    assert_allclose(shifted.get_stress(), s0, tol, "stress, unwrapped")
    shifted.wrap()
    assert_allclose(shifted.get_forces(), f0, tol, "forces, wrapped")


# Row 9: momentum conservation.
@pytest.mark.parametrize("make", [alloy, slab], ids=["bulk", "slab"])
def test_momentum(calc, dtype, make):
    assert_momentum(calc, make(ELEMENTS, repeat=(3, 3, 3), seed=11), dtype)


# Row 10: isolated atom.
@pytest.mark.parametrize("element", ELEMENTS)
def test_isolated_atom(energy_model, calc, element):
    atoms = Atoms(element, positions=[[0.1, 0.2, 0.3]])
    atoms.calc = calc
    expected = energy_model.config.per_element_energy_shift[ELEMENTS.index(element)]
    assert atoms.get_potential_energy() == expected
    assert (atoms.get_forces() == 0.0).all()


# Row 11: batch vs single.
def test_batch_vs_single(deployed, dtype):
    structures = [alloy(ELEMENTS, seed=12), molecule(ELEMENTS, seed=13), slab(ELEMENTS, seed=14)]
    mapper = TypeMapper(ELEMENTS)
    graphs = [atoms_to_graph(a, deployed.r_max, mapper) for a in structures]
    batch = Batch.from_graphs(graphs)
    batched = evaluate(deployed.module, batch, virial=True)
    per_structure = zip(batched.energy, batch.split(batched.atom_energy), batch.split(batched.forces), batched.virial)
    tol = tolerance("batch", dtype)
    for g, res in zip(graphs, per_structure):
        single = evaluate(deployed.module, Batch.from_graphs([g]), virial=True)
        expected = (single.energy[0], single.atom_energy, single.forces, single.virial[0])
        for key, a, b in zip(("energy", "energies", "forces", "virial"), res, expected):
            assert_allclose(a, b, tol, f"batched {key}")
