"""The ZBL short-range repulsion (``model.repulsion``, mdpot/nn/repulsion.py): the formula against a hand
computation from the published constants, its switching, the contract's forces and virials with the term
(Allegro and NequIP, default and explicit radii), TorchScript, config validation, checkpoint, deploy, ``mdpot info``
and the format version each file is written with."""
import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

from mdpot.cli import main
from mdpot.data import TypeMapper, atoms_to_graph
from mdpot.deploy import deploy_model, eager_model, load_model
from mdpot.models import AllegroConfig, NequIPConfig, load_checkpoint, make_config, save_checkpoint
from mdpot.nn.repulsion import ZBLRepulsion, default_radii, zbl_pair_energy
from mdpot.testing import (alloy, assert_allclose, assert_stress_matches_fd, close_contacts, compare_contract,
                           contract_outputs, small_model, tolerance)
from mdpot.testing.contract import ContractCalculator

ELEMENTS = ("Cu", "Au")
Z = {"H": 1, "Si": 14, "Cu": 29, "Au": 79}
RADII = {"default": {}, "explicit": dict(repulsion_r_inner=0.9, repulsion_r_outer=1.3)}
#: Central-difference step, Å. The ZBL's third derivative at 0.8 Å (~1e4 eV/Å^4 for Cu-Au) makes the O(d^2) error of
#: the default 1e-4 Å step about 1e-4 eV/Å; at 3e-6 Å truncation and rounding both stay below 2e-7 eV/Å.
FD_STEP = 3e-6


def zbl_by_hand(z1: int, z2: int, r: float) -> float:
    """Unswitched ZBL pair energy (eV) at ``r`` Å, written out from the published universal potential: screening
    length ``0.46850 Å / (Z1^0.23 + Z2^0.23)`` (0.8854 Bohr radii), ``e^2 / 4 pi eps_0 = 14.399645 eV Å``."""
    x = r * (z1 ** 0.23 + z2 ** 0.23) / 0.46850
    phi = (0.18175 * math.exp(-3.19980 * x) + 0.50986 * math.exp(-0.94229 * x)
           + 0.28022 * math.exp(-0.40290 * x) + 0.02817 * math.exp(-0.20162 * x))
    return 14.399645 * z1 * z2 / r * phi


def dimer_energy(elements, r_inner, r_outer, r: torch.Tensor) -> torch.Tensor:
    """Energy (eV) of a dimer of ``elements`` at distances ``r`` (one per dimer, Å) through ZBLRepulsion: both
    directed edges, each giving half the pair energy to its centre."""
    rep = ZBLRepulsion(elements, r_inner, r_outer)
    n = r.shape[0]
    vec = torch.zeros((2 * n, 3), dtype=torch.float64)
    vec[:n, 0], vec[n:, 0] = r, -r
    centres = torch.arange(2 * n)
    neighbours = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    types = torch.tensor([0] * n + [len(elements) - 1] * n)
    per_atom = rep(vec, torch.stack([centres, neighbours]), types, 2 * n)
    return per_atom[:n] + per_atom[n:]


# -- the formula ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pair,r", [(("Cu", "Cu"), 1.0), (("Cu", "Au"), 0.7), (("Au", "Au"), 1.5), (("H", "Si"), 0.3)])
def test_hand_computed_values(pair, r):
    """Full ZBL where the switch is 1 (``r`` below ``r_inner``), and exactly half of it mid-way through the switch
    (``S(1/2) = 1 - 10/8 + 15/16 - 6/32 = 1/2``)."""
    elements = list(dict.fromkeys(pair))
    full = dimer_energy(elements, [[2.0] * len(elements)] * len(elements), [[2.5] * len(elements)] * len(elements),
                        torch.tensor([r], dtype=torch.float64))
    assert_allclose(full, [zbl_by_hand(Z[pair[0]], Z[pair[1]], r)], 1e-13, f"{pair} at {r} Å")
    half = dimer_energy(elements, [[r - 0.1] * len(elements)] * len(elements),
                        [[r + 0.1] * len(elements)] * len(elements), torch.tensor([r], dtype=torch.float64))
    assert_allclose(half, [0.5 * zbl_by_hand(Z[pair[0]], Z[pair[1]], r)], 1e-13, f"{pair} at {r} Å, switch 1/2")
    assert 0.8854 * 0.529177210903 == pytest.approx(0.46850, rel=1e-4)  # the length constant is 0.8854 Bohr radii


def test_module_equals_formula():
    """ZBLRepulsion's per-type tables give what zbl_pair_energy (the plain formula) gives, per atom: half of each
    edge's pair energy on its centre, for three elements, per-pair default radii and distances across the switch."""
    elements = ["H", "Cu", "Au"]
    inner, outer = default_radii(elements, 5.0)
    rng = np.random.default_rng(0)
    n = 12
    types = torch.from_numpy(rng.integers(0, 3, n))
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    vec = torch.from_numpy(rng.normal(size=(len(i), 3)))
    vec = vec / vec.norm(dim=1, keepdim=True) * torch.from_numpy(rng.uniform(0.2, 2.0, (len(i), 1)))
    edge_index = torch.from_numpy(np.stack([i, j]))
    got = ZBLRepulsion(elements, inner, outer)(vec, edge_index, types, n)
    ti, tj = types[edge_index[0]], types[edge_index[1]]
    z = torch.tensor([float(Z[e]) for e in elements], dtype=torch.float64)
    inner_t, outer_t = torch.tensor(inner, dtype=torch.float64), torch.tensor(outer, dtype=torch.float64)
    pair = zbl_pair_energy(vec.norm(dim=1), z[ti], z[tj], inner_t[ti, tj], outer_t[ti, tj])
    want = torch.zeros(n, dtype=torch.float64).index_add(0, edge_index[0], 0.5 * pair)
    assert_allclose(got, want, 1e-13, "ZBLRepulsion vs zbl_pair_energy")
    assert (pair > 0).sum() > 20 and (pair == 0).sum() > 20  # inside and beyond the switching radii


# -- the switch ----------------------------------------------------------------------------------------------------

def dimer_energy_and_force(r: float):
    """Cu-Au dimer with the default radii: energy (eV) and force along the bond (-dE/dr, eV/Å, autograd)."""
    inner, outer = default_radii(ELEMENTS, 5.0)
    rr = torch.tensor([r], dtype=torch.float64, requires_grad=True)
    e = dimer_energy(list(ELEMENTS), inner, outer, rr)
    (g,) = torch.autograd.grad(e.sum(), rr)
    return float(e.detach()), float(-g)


def test_switch():
    inner, outer = default_radii(ELEMENTS, 5.0)
    r_in, r_out = inner[0][1], outer[0][1]
    assert (r_in, r_out) == pytest.approx((0.75 * 1.34, 1.34))    # Cu-Au: half the sum of covalent radii, x 3/4
    e, f = dimer_energy_and_force(r_out)
    assert e == 0.0 and abs(f) < 1e-12    # at r_outer the force is zero but for rounding in the switch's slope
    for r in (r_out + 1e-12, 1.5, 3.0):    # exactly zero beyond r_outer, energy and force
        assert dimer_energy_and_force(r) == (0.0, 0.0), r
    for r in (r_in, r_in - 1e-9, 0.6, 0.3):    # the full ZBL below r_inner
        e, _ = dimer_energy_and_force(r)
        assert_allclose(e, zbl_by_hand(29, 79, r), 1e-13, f"full ZBL at {r} Å")
    for r0 in (r_in, r_out):
        # energy and force continuous: the change over 2h is what the slope gives, not a jump
        h = 1e-8
        (e_lo, f_lo), (e_0, f_0), (e_hi, f_hi) = (dimer_energy_and_force(r0 + s) for s in (-h, 0.0, h))
        assert abs(e_hi - e_lo + 2 * h * f_0) <= 1e-6 * 2 * h * max(abs(f_0), 1.0) + 1e-12, r0
        assert abs(f_hi - f_lo) <= 1e-6 * max(abs(f_0), 1.0), r0
        # the force is -dE/dr (central differences), and its own slope is continuous too (S'' = 0 at both ends)
        h = 1e-6
        e_m, e_p = dimer_energy_and_force(r0 - h)[0], dimer_energy_and_force(r0 + h)[0]
        assert_allclose(f_0, -(e_p - e_m) / (2 * h), 1e-6, f"force vs finite differences at {r0} Å")
        jumps = []
        for h in (1e-5, 1e-6):    # the force's slope just above minus just below: O(h), not a kink's constant
            f_m2, f_m1, f_p1, f_p2 = (dimer_energy_and_force(r0 + s * h)[1] for s in (-2, -1, 1, 2))
            jumps.append(abs((f_p2 - f_p1) / h - (f_m1 - f_m2) / h))
        assert jumps[1] <= 0.2 * jumps[0] + 1e-6, (r0, jumps)


# -- the contract with the term: forces, virials, TorchScript --------------------------------------------------------

@pytest.fixture(scope="module")
def repulsion_models():
    """(architecture, radii) -> the small float64 eager model with the ZBL repulsion."""
    return {(arch, radii): eager_model(small_model(arch, ELEMENTS, seed=3, repulsion="zbl", **RADII[radii]))
            for arch in ("allegro", "nequip") for radii in RADII}


def trimer() -> Atoms:
    return Atoms("CuAuCu", positions=[[0.0, 0.0, 0.0], [0.85, 0.0, 0.0], [0.3, 1.05, 0.2]])


def periodic() -> Atoms:
    """32 atoms, close pairs at 0.8, 1.0 and 1.2 Å, the first across the periodic boundary."""
    return close_contacts(alloy(ELEMENTS, (2, 2, 2), a=3.6, seed=5), (0.8, 1.0, 1.2), seed=2)


def close_pair_atoms(atoms: Atoms, below: float = 1.4) -> list:
    d = atoms.get_all_distances(mic=atoms.pbc.any())
    np.fill_diagonal(d, np.inf)
    return sorted(set(np.nonzero(d < below)[0].tolist()))


@pytest.mark.parametrize("radii", list(RADII))
@pytest.mark.parametrize("arch", ["allegro", "nequip"])
@pytest.mark.parametrize("make", [trimer, periodic], ids=["trimer", "periodic"])
def test_forces_are_minus_the_energy_gradient(repulsion_models, arch, radii, make):
    """Row 4 with the term: forces on the atoms of the close pairs (and two others) equal central differences of
    the energy, 1e-6 eV/Å absolute, on forces of hundreds of eV/Å."""
    model = repulsion_models[arch, radii]
    atoms = make()
    atoms.calc = ContractCalculator(model.module, model.elements, model.r_max)
    forces = atoms.get_forces()
    which = close_pair_atoms(atoms)
    which += [k for k in (len(atoms) - 1, len(atoms) // 2) if k not in which]
    fd = calculate_numerical_forces(atoms, eps=FD_STEP, iatoms=which)
    assert np.abs(forces[which]).max() > 100.0    # the repulsion dominates
    assert_allclose(forces[which], fd, tolerance("fd_forces", "float64"), "forces vs finite differences", rtol=0.0)


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
def test_virials(repulsion_models, arch):
    """Row 5 with the term: the per-atom virials sum to the virial, and the stress equals the finite strain
    derivative of the energy."""
    model = repulsion_models[arch, "default"]
    atoms = periodic()
    out = contract_outputs(model.module, atoms_to_graph(atoms, model.r_max, TypeMapper(model.elements)))
    assert_allclose(out[3].sum(0), out[2], 1e-10, "sum of per-atom virials vs virial")
    assert float(out[2].abs().max()) > 100.0
    assert_stress_matches_fd(model, atoms, "float64")


@pytest.mark.parametrize("arch", ["allegro", "nequip"])
def test_scripted_equals_eager(repulsion_models, arch):
    model = repulsion_models[arch, "explicit"]
    graph = atoms_to_graph(periodic(), model.r_max, TypeMapper(model.elements))
    compare_contract(torch.jit.script(model.module), model.module, graph, "float64", what="scripted vs eager")


def test_float32_model_keeps_the_term_in_float64():
    """The term is outside the model dtype: a float32 model gets the same repulsion energy to float64 rounding."""
    graph = atoms_to_graph(periodic(), 3.5, TypeMapper(ELEMENTS))
    repulsion = {}
    for dtype in ("float32", "float64"):
        with_term = contract_outputs(eager_model(small_model("nequip", seed=3, repulsion="zbl"), dtype).module, graph)
        without = contract_outputs(eager_model(small_model("nequip", seed=3), dtype).module, graph)
        repulsion[dtype] = with_term[0] - without[0]
    assert float(repulsion["float64"].sum()) > 100.0
    assert_allclose(repulsion["float32"], repulsion["float64"], 1e-4, "float32 vs float64 model: repulsion energy")
    assert repulsion["float32"].dtype == torch.float64


# -- configs, checkpoints, deploy, info --------------------------------------------------------------------------

@pytest.mark.parametrize("options,error,message", [
    (dict(repulsion="lj"), ValueError, "repulsion must be one of ['zbl'] or null, got 'lj'"),
    (dict(repulsion="zbl", repulsion_r_inner=0.9), ValueError,
     "give both repulsion_r_inner and repulsion_r_outer or neither, got (0.9, None)"),
    (dict(repulsion="zbl", repulsion_r_outer=1.3), ValueError,
     "give both repulsion_r_inner and repulsion_r_outer or neither, got (None, 1.3)"),
    (dict(repulsion="zbl", repulsion_r_inner=1.3, repulsion_r_outer=1.3), ValueError,
     "repulsion radii must satisfy 0 < r_inner < r_outer <= r_max (4.0), got r_inner 1.3, r_outer 1.3"),
    (dict(repulsion="zbl", repulsion_r_inner=1.5, repulsion_r_outer=1.2), ValueError,
     "repulsion radii must satisfy 0 < r_inner < r_outer <= r_max (4.0), got r_inner 1.5, r_outer 1.2"),
    (dict(repulsion="zbl", repulsion_r_inner=1.0, repulsion_r_outer=4.5), ValueError,
     "repulsion radii must satisfy 0 < r_inner < r_outer <= r_max (4.0), got r_inner 1.0, r_outer 4.5"),
    (dict(repulsion="zbl", repulsion_r_inner=0.0, repulsion_r_outer=1.3), ValueError,
     "repulsion_r_inner must be a finite positive number, got 0.0"),
    (dict(repulsion="zbl", repulsion_r_inner="0.9", repulsion_r_outer=1.3), TypeError,
     "repulsion_r_inner must be a number, got '0.9' (str)"),
    (dict(repulsion_r_inner=0.9, repulsion_r_outer=1.3), ValueError,
     "repulsion_r_inner/repulsion_r_outer (0.9, 1.3) need a repulsion term; set repulsion: zbl"),
])
def test_config_validation(options, error, message):
    for config in (AllegroConfig, NequIPConfig):
        with pytest.raises(error) as info:
            config(elements=ELEMENTS, r_max=4.0, **options)
        assert str(info.value) == message
    with pytest.raises(error) as info:  # the same from a YAML mapping
        make_config("nequip", dict(elements=list(ELEMENTS), r_max=4.0, **options))
    assert str(info.value) == message


def test_radii_of_a_config():
    explicit = AllegroConfig(elements=ELEMENTS, r_max=4.0, repulsion="zbl", repulsion_r_inner=1, repulsion_r_outer=2)
    assert explicit.repulsion_radii() == (((1.0, 1.0), (1.0, 1.0)), ((2.0, 2.0), (2.0, 2.0)))
    assert AllegroConfig(elements=ELEMENTS, repulsion="zbl").repulsion_radii() == default_radii(ELEMENTS, 5.0)
    # r_outer is capped at r_max, r_inner follows it
    assert default_radii(["Au"], 1.0) == (((0.75,),), ((1.0,),))


def test_checkpoint_deploy_info(tmp_path, capsys):
    """A NequIP with explicit radii through a checkpoint and `mdpot deploy`: the same numbers as the eager model,
    format version 4 (the pair term in the block interface), and `mdpot info` names the term with its radii."""
    model = small_model("nequip", ELEMENTS, seed=6, repulsion="zbl", repulsion_r_inner=0.9, repulsion_r_outer=1.3)
    ckpt = save_checkpoint(model, tmp_path / "zbl.ckpt")
    again, _ = load_checkpoint(ckpt)
    assert again.config == model.config and again.config.repulsion == "zbl"
    assert main(["deploy", str(ckpt), "-o", str(tmp_path / "zbl.pt"), "--kernels", "reference"]) == 0
    capsys.readouterr()
    deployed = load_model(tmp_path / "zbl.pt")
    assert deployed.metadata["mdpot_format_version"] == 4 and deployed.module.mp_has_pair()
    graph = atoms_to_graph(periodic(), deployed.r_max, TypeMapper(ELEMENTS))
    compare_contract(deployed.module, eager_model(model).module, graph, "float64", what="deployed vs eager")
    assert main(["info", str(tmp_path / "zbl.pt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[1] for line in lines if line.startswith("repulsion ")] == [
        "zbl (r_inner/r_outer, Å: Cu-Cu 0.9/1.3, Cu-Au 0.9/1.3, Au-Au 0.9/1.3)"]
    assert main(["info", str(tmp_path / "zbl.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mdpot_format_version"] == 4 and info["config"]["repulsion_r_outer"] == 1.3


@pytest.fixture(scope="module")
def allegro_file(tmp_path_factory):
    """The small Allegro with the repulsion (default radii), deployed in float64."""
    return deploy_model(small_model("allegro", ELEMENTS, repulsion="zbl"), tmp_path_factory.mktemp("zbl") / "a.pt",
                        kernels="reference")


def test_format_versions(allegro_file, capsys):
    """Version 4 only for message-passing TorchScript with the term; Allegro with it stays 2 (its whole-graph
    forward includes the term, which every reader of version 2 runs), and so does NequIP without it."""
    allegro = allegro_file
    assert allegro.metadata["mdpot_format_version"] == 2
    assert eager_model(small_model("nequip", ELEMENTS, repulsion="zbl")).metadata["mdpot_format_version"] == 4
    assert eager_model(small_model("nequip", ELEMENTS)).metadata["mdpot_format_version"] == 2
    assert main(["info", str(allegro.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[1] for line in lines if line.startswith("repulsion ")] == [
        "zbl (r_inner/r_outer, Å: Cu-Cu 0.99/1.32, Cu-Au 1.005/1.34, Au-Au 1.02/1.36)"]


def test_deploy_self_check_sees_the_term():
    """The deploy self-check puts close pairs into its structure for a model with a repulsion: a compiled module
    whose term differs (other radii) is caught."""
    from mdpot.deploy.compile import SelfCheckError, self_check

    good = eager_model(small_model("nequip", ELEMENTS, seed=2, repulsion="zbl"))
    other = eager_model(small_model("nequip", ELEMENTS, seed=2, repulsion="zbl", **RADII["explicit"]))
    assert self_check(good.module, good.module, ELEMENTS, good.r_max, "float64")["per-atom energy"] == 0.0
    with pytest.raises(SelfCheckError, match="self-check per-atom energy: max"):
        self_check(other.module, good.module, ELEMENTS, good.r_max, "float64")


def test_calculator_chunks(allegro_file):
    """Row 28 with the term: the ASE calculator's chunks of centres (Allegro) give the one-call results."""
    from mdpot import MDPotCalculator

    atoms = periodic()
    results = []
    for max_edges in (None, 50):
        calc = MDPotCalculator(allegro_file.path, max_edges=max_edges)
        calc.calculate(atoms, ["energy", "energies", "forces", "stress", "stresses"])
        results.append(dict(calc.results))
    assert abs(results[0]["energy"]) > 100.0
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        assert_allclose(results[1][key], results[0][key], 1e-12, f"chunked vs one call: {key}")
