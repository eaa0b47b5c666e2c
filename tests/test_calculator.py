"""Rows 12-13 of docs/testing.md and the ASE bad inputs; chunked evaluation, memory checks and pickling."""
import threading
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from mdpot import MDPotCalculator
from mdpot.data import TypeMapper, atoms_to_graph
from mdpot.testing import alloy, assert_allclose, fcc, molecule, slab, tolerance

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
    with pytest.raises(TypeError, match="^model must be a path or LoadedModel, or a list of them, got int$"):
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


# Chunked evaluation of strictly local models (the pair style's max_edges rule), the memory checks, pickling.

def _assert_same_results(actual: dict, expected: dict, dtype: str) -> None:
    """Every property equal within the calculator tolerance relative to the property's largest magnitude (float64:
    1e-12)."""
    tol = tolerance("calculator", dtype)
    for name, value in expected.items():
        scale = max(float(np.abs(value).max()), 1e-300)
        assert_allclose(actual[name], value, tol * scale, name, rtol=0.0)


def _all_properties(atoms: Atoms, calc) -> dict:
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces()}
    if atoms.cell.rank == 3:
        out["stress"] = atoms.get_stress()
        out["stresses"] = atoms.get_stresses()
    return out


class _CountingModel:
    """Stands in for ``calc.model``: records the atoms, local atoms and edges of every call."""

    def __init__(self, model):
        self.model, self.calls, self.threads = model, [], set()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial=False):
        self.calls.append((pos.shape[0], n_local, edge_index.shape[1]))
        self.threads.add(threading.get_ident())
        return self.model(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)


def test_centre_chunks_follow_the_pair_style_rule():
    from mdpot.calculator import centre_chunks

    counts = np.array([3, 5, 0, 2, 7])
    assert centre_chunks(counts, 5) == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert centre_chunks(counts, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert centre_chunks(counts, 17) == [(0, 5)]
    assert centre_chunks(counts, 10) == [(0, 4), (4, 5)]


@pytest.mark.parametrize("make", [lambda: alloy(ELEMENTS, seed=31), lambda: slab(ELEMENTS, seed=32),
                                  lambda: molecule(ELEMENTS, n_atoms=12, seed=33)],
                         ids=["periodic-small-cell", "slab", "molecule"])
def test_chunks_equal_one_call(deployed, dtype, make):
    """Strictly local models: any max_edges, down to one centre atom per call (fewer edges than one atom has),
    gives the one-call energy, per-atom energies, forces, stress and per-atom stresses (float64: 1e-12 relative);
    every call holds at most max_edges edges unless it is a single atom. Message-passing models ignore max_edges
    with a warning."""
    atoms = make()
    local = deployed.metadata["architecture"] == "allegro"
    one_call = _all_properties(atoms, MDPotCalculator(deployed, max_edges=10**9) if local else MDPotCalculator(deployed))
    n_edges = atoms_to_graph(atoms, deployed.r_max, TypeMapper(ELEMENTS)).num_edges
    evaluations = 2 if atoms.cell.rank == 3 else 1  # per-atom stresses are a second evaluation
    if not local:
        with pytest.warns(UserWarning, match=r"max_edges 5 is ignored: the model passes messages \(receptive field"):
            calc = MDPotCalculator(deployed, max_edges=5)
        calc.model = counter = _CountingModel(calc.model)
        _assert_same_results(_all_properties(atoms, calc), one_call, dtype)
        assert {c[2] for c in counter.calls} == {n_edges}
        return
    for max_edges in (1, n_edges // 3, n_edges - 1):
        calc = MDPotCalculator(deployed, max_edges=max_edges)
        calc.model = counter = _CountingModel(calc.model)
        _assert_same_results(_all_properties(atoms, calc), one_call, dtype)
        calls = counter.calls
        assert sum(c[1] for c in calls) == evaluations * len(atoms), "each atom is a centre once per evaluation"
        assert sum(c[2] for c in calls) == evaluations * n_edges
        assert all(c[2] <= max_edges or c[1] == 1 for c in calls), calls
        assert len(calls) > evaluations
        if max_edges == 1:
            assert len(calls) == evaluations * len(atoms)


def test_parallel_chunks_equal_chunks_in_turn(deployed, dtype):
    """Chunks evaluated at once (each in a thread of its own, on one torch thread) give bit for bit what they give
    in turn on one thread, and the one-call results to rounding; torch's thread count is what it was; a TorchScript
    file on the CPU overlaps as many chunks as torch has threads by default, a package none."""
    import torch

    if deployed.metadata["architecture"] != "allegro":
        pytest.skip("message-passing models take every edge in one call")
    atoms = alloy(ELEMENTS, seed=34)
    n_edges = atoms_to_graph(atoms, deployed.r_max, TypeMapper(ELEMENTS)).num_edges
    one_call = _all_properties(atoms, MDPotCalculator(deployed, max_edges=10**9))
    in_turn = MDPotCalculator(deployed, max_edges=n_edges // 5, parallel_chunks=1)
    assert in_turn.chunk_workers(6) == 1
    reference = _all_properties(atoms, in_turn)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        overlapping = 2 if deployed.format == "torchscript" or deployed.module.overlapping else 1
        assert MDPotCalculator(deployed).chunk_workers(6) == overlapping
        assert MDPotCalculator(deployed).chunk_workers(1) == 1
        calc = MDPotCalculator(deployed, max_edges=n_edges // 5, parallel_chunks=3)
        assert calc.chunk_workers(6) == 3
        calc.model = counter = _CountingModel(calc.model)
        results = _all_properties(atoms, calc)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert len(counter.calls) >= 10 and threading.get_ident() not in counter.threads
    for key, value in results.items():
        assert np.array_equal(np.asarray(value), np.asarray(reference[key])), key
    _assert_same_results(results, one_call, dtype)
    with pytest.raises(ValueError, match=r"^parallel_chunks must be a positive integer, got 0$"):
        MDPotCalculator(deployed, parallel_chunks=0)


SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "models"

_OOM_SCRIPT = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from mdpot import MDPotCalculator
from mdpot.testing import fcc
allegro, nequip, chunked = (MDPotCalculator(sys.argv[1], max_edges=10**9), MDPotCalculator(sys.argv[2], check_memory=False),
                            MDPotCalculator(sys.argv[1], max_edges=4000))
for calc in (allegro, nequip, chunked):  # load and warm up before the limit
    small = fcc("Cu", (2, 2, 2)); small.calc = calc; small.get_forces()
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))
out = {}
for name, calc in (("allegro", allegro), ("nequip", nequip), ("chunked", chunked)):
    big = fcc("Cu", (10, 10, 10), rattle=0.05, seed=1); big.calc = calc
    try:
        out[name] = float(big.get_potential_energy())
    except MemoryError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_out_of_memory_says_so():
    """A call that really runs out of memory (address space limited to what the process had plus 300 MB) raises
    MemoryError whose first line says so, with the atom and edge counts and the hints; chunks fit in the same
    limit."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _OOM_SCRIPT, str(SHIPPED / "allegro-cu-emt" / "model.pt"),
                           str(SHIPPED / "nequip-cu-emt" / "model.pt")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    first = {k: v.splitlines()[0] if isinstance(v, str) else v for k, v in out.items()}
    big = fcc("Cu", (10, 10, 10), rattle=0.05, seed=1)
    edges = {r: atoms_to_graph(big, r, TypeMapper(["Cu"])).num_edges for r in (5.0, 4.5)}  # allegro, nequip r_max
    assert first["allegro"] == (
        f"out of memory evaluating 4000 atoms and {edges[5.0]} edges in calls of up to {edges[5.0]} edges (allegro, "
        "float64, cpu): lower max_edges (now 1000000000), deploy the model with --dtype float32 or run it in LAMMPS "
        "(pair_style mdpot) on more MPI ranks")
    assert out["allegro"].splitlines()[1].startswith("(torch: ") and "allocate" in out["allegro"].splitlines()[1]
    assert first["nequip"] == (
        f"out of memory evaluating 4000 atoms and {edges[4.5]} edges in one call (message passing) (nequip, float64, cpu): "
        "deploy the model with --dtype float32 or run it in LAMMPS (pair_style mdpot) on more MPI ranks")
    assert isinstance(out["chunked"], float), out["chunked"]


def test_message_passing_refused_before_running(monkeypatch):
    """A message-passing call whose estimated memory exceeds what is available is refused before it runs."""
    import mdpot.calculator
    from mdpot.calculator import available_memory, estimate_memory

    calc = MDPotCalculator(SHIPPED / "nequip-cu-emt" / "model.pt")
    atoms = fcc("Cu", (3, 3, 3))
    n_edges = calc.graph(atoms).num_edges
    need = estimate_memory(calc.model.metadata, len(atoms), n_edges)
    assert 7e3 * n_edges < need < 1e4 * n_edges  # measured 7.0 KB per edge for this size in float64
    assert estimate_memory(MDPotCalculator(SHIPPED / "allegro-cu-emt" / "model.pt").model.metadata, 10, 100) is None
    assert 0 < available_memory() < 2**50
    calc.model = counter = _CountingModel(calc.model)
    monkeypatch.setattr(mdpot.calculator, "available_memory", lambda device: 0.5e9 * need / 1e9)
    atoms.calc = calc
    with pytest.raises(MemoryError) as info:
        atoms.get_potential_energy()
    assert str(info.value) == (
        f"not enough memory for 108 atoms and {n_edges} edges in one call of this message-passing model: estimated "
        f"{need / 1e9:.1f} GB, available {0.5 * need / 1e9:.1f} GB on cpu; deploy it with --dtype float32, or run it "
        "in LAMMPS (pair_style mdpot) on more MPI ranks (MDPotCalculator(check_memory=False) skips this estimate)")
    assert counter.calls == []
    atoms.calc = MDPotCalculator(calc.model.model, check_memory=False)
    assert np.isfinite(atoms.get_potential_energy())


def test_bad_max_edges():
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ValueError) as info:
            MDPotCalculator(SHIPPED / "allegro-cu-emt" / "model.pt", max_edges=bad)
        assert str(info.value) == f"max_edges must be a positive integer, got {bad!r}"


def test_default_max_edges_from_bytes_per_edge(deployed_torchscript):
    """The default max_edges is a byte budget over the file's measured bytes_per_edge (the pair style's max_edges
    auto): on the CPU, for a strictly local model without max_memory, cache-sized calls (32 MB), otherwise
    max_memory (512 MB by default); within the bounds; a file without the key keeps the dtype default; max_memory and
    max_edges exclude each other."""
    from mdpot.calculator import (AUTO_MAX_EDGES_RANGE, CACHE_CHUNK_BYTES, DEFAULT_MAX_EDGES, DEFAULT_MAX_MEMORY,
                                  auto_max_edges)

    meta = deployed_torchscript.metadata
    per_edge = meta["bytes_per_edge"]
    assert 1e2 < per_edge < 1e5, per_edge  # the small test models: 0.6-5 kB per edge
    calc = MDPotCalculator(deployed_torchscript)
    if meta["architecture"] == "allegro":  # strictly local
        assert CACHE_CHUNK_BYTES == 32 * 1024**2 and calc.max_edges == max(1000, int(CACHE_CHUNK_BYTES // per_edge))
        assert calc.max_edges_reason.startswith(f"cache-sized calls on the CPU, 32 MB / {per_edge:.0f} bytes per edge "
                                                "measured at deploy")
    else:  # message passing: one call; the budget only names what a call would get
        assert calc.max_edges == int(DEFAULT_MAX_MEMORY // per_edge)
        assert calc.max_edges_reason == f"max_memory 512 MB / {per_edge:.0f} bytes per edge measured at deploy"
    assert auto_max_edges(meta, DEFAULT_MAX_MEMORY, cache_sized=True)[0] == max(1000, int(CACHE_CHUNK_BYTES // per_edge))
    calc = MDPotCalculator(deployed_torchscript, max_memory="512MB")  # a budget given: the memory rule
    assert calc.max_edges == int(DEFAULT_MAX_MEMORY // per_edge)
    assert calc.max_edges_reason == f"max_memory 512 MB / {per_edge:.0f} bytes per edge measured at deploy"
    calc = MDPotCalculator(deployed_torchscript, max_memory=f"{200 * per_edge / 1024**2}MB")
    assert calc.max_edges == AUTO_MAX_EDGES_RANGE[0] and calc.max_edges_reason.endswith(", raised to the minimum 1000")
    assert MDPotCalculator(deployed_torchscript, max_memory=per_edge * 5000.5).max_edges == 5000
    assert auto_max_edges(meta, 1e15)[0] == AUTO_MAX_EDGES_RANGE[1]
    if meta["architecture"] == "allegro":
        assert MDPotCalculator(deployed_torchscript, max_edges=77).max_edges_reason == "given"
    legacy = MDPotCalculator(SHIPPED / "allegro-cu-emt" / "model.pt")  # written before bytes_per_edge existed
    assert "bytes_per_edge" not in legacy.model.metadata
    assert legacy.max_edges == DEFAULT_MAX_EDGES["float64"] and "records no bytes_per_edge" in legacy.max_edges_reason
    with pytest.raises(ValueError) as info:
        MDPotCalculator(deployed_torchscript, max_edges=100, max_memory="1GB")
    assert str(info.value) == "max_memory sizes the default max_edges; it cannot be combined with max_edges=100"
    for bad in ("2 GB", "2TB", "-1GB", "+2GB", "nanGB", 0, -5.0, True):
        with pytest.raises(ValueError) as info:
            MDPotCalculator(deployed_torchscript, max_memory=bad)
        assert str(info.value) == ("max_memory must be a positive size in bytes, or a string in MB or GB (e.g. '2GB', "
                                   f"'500MB'), got {bad!r}")


def test_memory_estimate_uses_the_measured_bytes_per_edge(deployed_torchscript):
    """A message-passing file with bytes_per_edge is estimated by it; a strictly local one is not estimated."""
    from mdpot.calculator import estimate_memory

    meta = deployed_torchscript.metadata
    expected = None if meta["architecture"] == "allegro" else meta["bytes_per_edge"] * 1234
    assert estimate_memory(meta, 10, 1234) == expected


def _energy_forces(atoms: Atoms, calc) -> tuple:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def test_pickle_round_trip():
    """From a file: the pickle names the file and its weights digest and reloads it on the same device; from an
    in-memory TorchScript model: its bytes; from an eager model: the model itself. Results are equal, and pickling
    Atoms with the calculator attached works."""
    import dataclasses
    import pickle

    from mdpot.deploy import eager_model, load_model
    from mdpot.testing import small_model

    path = SHIPPED / "allegro-cu-emt" / "model.pt"
    atoms = fcc("Cu", (2, 2, 2), rattle=0.1, seed=41)
    in_memory = dataclasses.replace(load_model(path), path=None)
    eager = eager_model(small_model("allegro", ("Cu",), seed=3))
    for model, kind in ((path, "file"), (in_memory, "bytes"), (eager, "object")):
        calc = MDPotCalculator(model, max_edges=50)
        data = pickle.dumps(calc)
        assert calc.__getstate__()["model"][0] == kind
        if kind == "file":
            assert len(data) < 10_000, "the file is named, not copied"
        clone = pickle.loads(data)
        assert clone.device == calc.device and clone.max_edges == 50 and clone.model.path == calc.model.path
        e, f = _energy_forces(atoms, calc)
        e2, f2 = _energy_forces(atoms, clone)
        assert e2 == e and np.array_equal(f2, f)
    attached = atoms.copy()
    attached.calc = MDPotCalculator(path)
    e = attached.get_potential_energy()
    copy = pickle.loads(pickle.dumps(attached))
    assert copy.calc.results["energy"] == e  # results travel with it
    copy.positions[0, 0] += 0.1
    copy.positions[0, 0] -= 0.1
    assert copy.get_potential_energy() == e


def test_pickle_refuses_a_changed_file(tmp_path):
    import pickle
    import shutil

    path = tmp_path / "model.pt"
    shutil.copy(SHIPPED / "allegro-cu-emt" / "model.pt", path)
    data = pickle.dumps(MDPotCalculator(path))
    shutil.copy(SHIPPED / "allegro-si-sw" / "model.pt", path)
    from mdpot.deploy import load_model

    old = load_model(SHIPPED / "allegro-cu-emt" / "model.pt").metadata["weights_sha256"]
    new = load_model(path).metadata["weights_sha256"]
    with pytest.raises(ValueError) as info:
        pickle.loads(data)
    assert str(info.value) == (f"{path}: the model file changed since the calculator was pickled "
                               f"(weights {new[:12]}… != {old[:12]}…)")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=f"model file not found: {path}"):
        pickle.loads(data)


def test_multiprocessing_spawn_pool():
    """What multiprocessing does: Atoms with the calculator attached go to fresh (spawned) processes, which reload
    the model and compute the same energies."""
    import multiprocessing

    calc = MDPotCalculator(SHIPPED / "allegro-cu-emt" / "model.pt")
    structures = []
    for seed in (1, 2, 3):
        atoms = fcc("Cu", (2, 2, 2), rattle=0.05, seed=seed)
        atoms.calc = calc
        structures.append(atoms)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        energies = pool.map(Atoms.get_potential_energy, structures)
    assert energies == [a.get_potential_energy() for a in structures]
