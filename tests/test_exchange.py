"""Per-block feature exchange (docs/message_passing_exchange.md): the Python reference of the engine algorithm,
using only the block methods of the contract, equals the whole-graph forward on the periodic graph."""
import numpy as np
import pytest
import torch

from mdpot.data import TypeMapper, atoms_to_graph
from mdpot.deploy import deploy_model, eager_model
from mdpot.models import MessagePassingPotential, Potential
from mdpot.testing import alloy, assert_allclose, close_contacts, fcc, sample_structure, slab, small_model, tolerance
from mdpot.testing.contract import contract_outputs
from mdpot.testing.exchange import decompose, exchange_outputs

ELEMENTS = ("Cu", "Au")
MODELS = {
    "2 layers": dict(num_layers=2),
    "3 layers l_max 2": dict(num_layers=3, l_max=2),
}


def _structures():
    bulk = fcc("Cu", (3, 3, 3), a=3.8, rattle=0.1, seed=1)
    bulk.set_chemical_symbols([ELEMENTS[k % 2] for k in range(len(bulk))])
    return {
        "cubic": bulk,
        "triclinic": alloy(ELEMENTS, (3, 3, 3), seed=2),
        "cell < 2 r_max": sample_structure(ELEMENTS, 3.5, seed=3),
        "slab": slab(ELEMENTS, (2, 2, 2), seed=4),
    }


STRUCTURES = _structures()
GRIDS = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (1, 1, 4)]


@pytest.fixture(scope="session", params=list(MODELS))
def scripted(request):
    """A small two-element NequIP in float64: eager contract module, its TorchScript compilation, metadata."""
    loaded = eager_model(small_model("nequip", ELEMENTS, seed=1, **MODELS[request.param]), "float64")
    return loaded, torch.jit.script(loaded.module)


@pytest.fixture(scope="session")
def references(scripted):
    """Whole-graph outputs of every structure (the ASE path: periodic shifts, every atom local)."""
    loaded, module = scripted
    out = {}
    for name, atoms in STRUCTURES.items():
        graph = atoms_to_graph(atoms, loaded.r_max, TypeMapper(loaded.elements))
        out[name] = contract_outputs(module, graph)
    return out


def _compare(result, expected, dtype):
    tol = tolerance("lammps", dtype)
    for got, want, what in zip((result.atom_energy, result.forces, result.virial, result.atom_virial), expected,
                               ("per-atom energy", "forces", "virial", "per-atom virial")):
        assert_allclose(got, want, tol, what)
    assert_allclose(result.atom_energy.sum(), expected[0].sum(), tol, "energy")


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_exchange_equals_whole_graph(scripted, references, structure, grid):
    loaded, module = scripted
    ranks = decompose(STRUCTURES[structure], grid, loaded.r_max, loaded.elements)
    assert sum(rg.n_local for rg in ranks) == len(STRUCTURES[structure])
    _compare(exchange_outputs(module, ranks), references[structure], "float64")


@pytest.mark.parametrize("variant", [dict(keep_graph=True), dict(keep_graph=True, shared_geometry=False),
                                     dict(max_edges=40), dict(max_edges=1)],
                         ids=["keep_graph", "keep_graph_per_block_geometry", "max_edges_40", "max_edges_1"])
def test_chunked_and_kept_graph(scripted, references, variant):
    """Chunks of centres (recomputed in the backward pass) and a kept autograd graph give the same result; with the
    graph kept, the edge geometry computed once for all blocks (mp_geometry) or by every block from the vectors."""
    loaded, module = scripted
    ranks = decompose(STRUCTURES["triclinic"], (2, 2, 1), loaded.r_max, loaded.elements)
    _compare(exchange_outputs(module, ranks, **variant), references["triclinic"], "float64")


def test_eager_equals_scripted(scripted):
    loaded, module = scripted
    ranks = decompose(STRUCTURES["cubic"], (2, 1, 1), loaded.r_max, loaded.elements)
    a, b = exchange_outputs(loaded.module, ranks), exchange_outputs(module, ranks)
    for x, y in zip((a.atom_energy, a.forces, a.virial, a.atom_virial), (b.atom_energy, b.forces, b.virial, b.atom_virial)):
        assert_allclose(x, y, tolerance("deploy", "float64"), "eager vs scripted")


def test_features_cross_several_ranks(scripted, references):
    """Subdomains thinner than r_max: an atom's energy depends on atoms three or more ranks away."""
    loaded, module = scripted
    atoms = STRUCTURES["cubic"]
    ranks = decompose(atoms, (4, 1, 1), loaded.r_max, loaded.elements)
    assert atoms.cell.lengths()[0] / 4 < loaded.r_max
    # every rank has ghosts owned by all three other ranks
    assert all(set(rg.owner.tolist()) >= set(range(4)) - {rg.rank} for rg in ranks)
    _compare(exchange_outputs(module, ranks), references["cubic"], "float64")


def test_rank_without_atoms_and_self_images(scripted, references):
    loaded, module = scripted
    ranks = decompose(STRUCTURES["slab"], (1, 1, 4), loaded.r_max, loaded.elements)
    assert min(rg.n_local for rg in ranks) == 0
    single = decompose(STRUCTURES["cell < 2 r_max"], (1, 1, 1), loaded.r_max, loaded.elements)[0]
    assert set(single.ghost.tolist()) == set(range(len(STRUCTURES["cell < 2 r_max"])))    # only self-images
    _compare(exchange_outputs(module, ranks), references["slab"], "float64")


def test_communication_counts(scripted):
    """Bytes moved: L - 1 exchanges of every ghost row each way, at the widths the model states."""
    loaded, module = scripted
    ranks = decompose(STRUCTURES["cubic"], (2, 1, 1), loaded.r_max, loaded.elements)
    result = exchange_outputs(module, ranks)
    widths = module.mp_feature_widths()
    ghosts = sum(len(rg.ghost) for rg in ranks)
    expected = ghosts * sum(widths[1:]) * 8
    assert result.forward_bytes == result.reverse_bytes == expected
    assert len(module.mp_state_widths()) == module.mp_num_blocks() + 1 == len(widths) + 1


def test_float32_deployed_file(tmp_path):
    """A deployed float32 file carries the block methods; the exchange matches its forward to row 15's float32
    tolerance. Allegro (strictly local) is deployed without them."""
    loaded = deploy_model(small_model("nequip", ELEMENTS, seed=2, num_layers=3), tmp_path / "n.pt", dtype="float32")
    assert loaded.module.mp_num_blocks() == 3
    atoms = STRUCTURES["triclinic"]
    expected = contract_outputs(loaded.module, atoms_to_graph(atoms, loaded.r_max, TypeMapper(loaded.elements)))
    ranks = decompose(atoms, (2, 2, 1), loaded.r_max, loaded.elements)
    _compare(exchange_outputs(loaded.module, ranks), expected, "float32")
    # the engine's default path: the graph kept, the geometry (radial table shared per distinct length) once
    _compare(exchange_outputs(loaded.module, ranks, keep_graph=True, shared_geometry=True), expected, "float32")
    assert type(eager_model(small_model("allegro", ELEMENTS), "float64").module) is Potential
    assert type(eager_model(small_model("nequip", ELEMENTS), "float64").module) is MessagePassingPotential


def test_isolated_atom_energy_is_its_shift(scripted):
    """An atom with no neighbours gets exactly its per-element shift through the readout, as in forward."""
    loaded, module = scripted
    types = torch.tensor([0, 1])
    state, x = module.mp_embed(types, 2)
    no_edges = torch.zeros((2, 0), dtype=torch.long)
    for b in range(module.mp_num_blocks()):
        state, x = module.mp_block(b, state, x, torch.zeros((0, 3), dtype=torch.float64), no_edges, types)
    energy, _ = module.mp_readout(state, types)
    assert torch.equal(energy, loaded.module.energy_shift.index_select(0, types))


def test_decompose_rejects_bad_input():
    with pytest.raises(ValueError, match="grid"):
        decompose(STRUCTURES["cubic"], (0, 1, 1), 3.5, ELEMENTS)
    atoms = STRUCTURES["cubic"].copy()
    atoms.cell = np.zeros((3, 3))
    atoms.pbc = False
    with pytest.raises(ValueError, match="3-D cell"):
        decompose(atoms, (1, 1, 1), 3.5, ELEMENTS)


@pytest.fixture(scope="module")
def repulsion_case():
    """A NequIP with the ZBL repulsion (scripted), the triclinic alloy with close pairs across the periodic boundary
    and the 2x1x1 rank boundary, and the whole-graph outputs on it."""
    loaded = eager_model(small_model("nequip", ELEMENTS, seed=1, repulsion="zbl"), "float64")
    module = torch.jit.script(loaded.module)
    atoms = close_contacts(STRUCTURES["triclinic"], (0.8, 1.0, 1.2), seed=1)
    graph = atoms_to_graph(atoms, loaded.r_max, TypeMapper(loaded.elements))
    expected = contract_outputs(module, graph)
    without = contract_outputs(eager_model(small_model("nequip", ELEMENTS, seed=1), "float64").module, graph)
    assert module.mp_has_pair() and float(expected[0].sum() - without[0].sum()) > 100.0    # the term is active (eV)
    return loaded, module, atoms, expected


@pytest.mark.parametrize("grid,variant", [((1, 1, 1), {}), ((2, 2, 1), {}), ((2, 1, 1), dict(max_edges=40)),
                                          ((2, 1, 1), dict(keep_graph=True))],
                         ids=["1x1x1", "2x2x1", "2x1x1_max_edges_40", "2x1x1_keep_graph"])
def test_exchange_with_repulsion(repulsion_case, grid, variant):
    """The exchange adds mp_pair on each rank's local-centred edges and equals the whole-graph forward."""
    loaded, module, atoms, expected = repulsion_case
    ranks = decompose(atoms, grid, loaded.r_max, loaded.elements)
    _compare(exchange_outputs(module, ranks, **variant), expected, "float64")


def test_block_on_geometry_equals_block_on_vectors(tmp_path):
    """mp_block_geometry on mp_geometry's list gives mp_block's outputs, and their gradients w.r.t. the edge
    vectors (through the list) agree, for the fused file (radial table per distinct length) and the reference one."""
    atoms = STRUCTURES["triclinic"]
    for kernels in ("fused", "reference"):
        loaded = deploy_model(small_model("nequip", ELEMENTS, seed=3, num_layers=2), tmp_path / f"{kernels}.pt",
                              dtype="float64", kernels=kernels)
        module = loaded.module
        rank = decompose(atoms, (2, 1, 1), loaded.r_max, loaded.elements)[0]
        state, x = module.mp_embed(rank.atom_type, rank.n_local)
        types = rank.atom_type[:rank.n_local]
        vec = rank.edge_vec.clone().requires_grad_(True)
        s1, x1 = module.mp_block(0, state, x, vec, rank.edge_index, types)
        (g1,) = torch.autograd.grad([s1.sum() + x1.square().sum()], [vec])
        vec2 = rank.edge_vec.clone().requires_grad_(True)
        geometry = module.mp_geometry(vec2)
        assert len(geometry) == 5 and any(g.requires_grad for g in geometry)
        s2, x2 = module.mp_block_geometry(0, state, x, geometry, rank.edge_index, types)
        (g2,) = torch.autograd.grad([s2.sum() + x2.square().sum()], [vec2])
        tol = tolerance("deploy", "float64")
        assert_allclose(s2, s1, tol, f"{kernels}: state")
        assert_allclose(x2, x1, tol, f"{kernels}: x")
        assert_allclose(g2, g1, tol, f"{kernels}: dE/dr")
        assert g1.abs().max() > 0
