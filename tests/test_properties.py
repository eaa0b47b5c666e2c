"""The property benchmark (``mdpot properties``): a reference against itself, EMT Cu's numbers against direct
evaluations with ASE's EMT, the RDF analysis, and the command line."""
import json
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.geometry.rdf import get_rdf
from scipy.optimize import minimize_scalar

from mdpot.cli import main
from mdpot.properties import (PROPERTIES, QUICK_PROPERTIES, Measurement, compare, crystal_for, rdf_peak,
                              resolve_reference)
from mdpot.properties.measure import _dimer as dimer_curve

REPO = Path(__file__).resolve().parents[1]
CU_MODEL = REPO / "examples" / "models" / "allegro-cu-emt" / "model.pt"
SI_MODEL = REPO / "examples" / "models" / "allegro-si-sw" / "model.pt"


@pytest.fixture(scope="module")
def emt_vs_emt():
    return compare(EMT(), EMT(), "Cu", r_max=5.0, reference="emt", model_name="EMT")


def test_reference_against_itself_has_zero_differences(emt_vs_emt):
    keys = [key for key, *_ in emt_vs_emt.rows]
    expected = [key for key, *_ in PROPERTIES if not key.startswith(("rdf_", "coordination"))]
    assert keys == expected  # everything but the liquid (Si only) was measured
    for key, model, ref in emt_vs_emt.rows:
        assert model == ref, key
        if not isinstance(model, bool):
            assert emt_vs_emt.difference(key) == (0.0, 0.0), key
    assert emt_vs_emt.model.notes == [] and emt_vs_emt.model.facet == "(111)"
    table = emt_vs_emt.table()
    assert "surface energy (111)" in table and "dimer repulsive to shortest r" in table


def test_emt_cu_numbers_match_direct_evaluation(emt_vs_emt):
    v = emt_vs_emt.model.values

    def energy_per_atom(a):
        atoms = bulk("Cu", "fcc", a=a)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    a0 = minimize_scalar(energy_per_atom, bracket=(3.5, 3.6, 3.7), tol=1e-10).x
    assert v["lattice_constant"] == pytest.approx(a0, abs=2e-4)
    atom = bulk("Cu", "fcc", a=a0)[:1]
    atom.set_cell([30.0] * 3)
    atom.calc = EMT()
    e_coh = atom.get_potential_energy() - energy_per_atom(a0)
    assert v["cohesive_energy"] == pytest.approx(e_coh, abs=1e-5)
    # B = V d2E/dV2 at the minimum, central differences in the volume per atom (a^3 / 4).
    v0, h = a0 ** 3 / 4, 0.01 * a0 ** 3 / 4
    e = [energy_per_atom((4 * (v0 + k * h)) ** (1 / 3)) for k in (-1, 0, 1)]
    b_direct = v0 * (e[0] - 2 * e[1] + e[2]) / h ** 2 / units.GPa
    assert v["bulk_modulus"] == pytest.approx(b_direct, rel=5e-3)
    # The EOS bulk modulus agrees with the one from the elastic constants of a cubic crystal.
    assert v["bulk_modulus"] == pytest.approx((v["c11"] + 2 * v["c12"]) / 3, rel=5e-3)
    # EMT Cu's well-known values, to the digits they are usually quoted with.
    assert (round(v["lattice_constant"], 2), round(v["cohesive_energy"], 2), round(v["bulk_modulus"])) == \
        (3.59, 3.52, 134)
    assert v["dimer_repulsive"] is True and v["dimer_single_well"] is True and v["dimer_r_min"] == pytest.approx(2.15)
    assert v["vacancy_formation_energy"] == pytest.approx(1.22, abs=0.01)


class PairWells(Calculator):
    """Energy of a pair potential: a short-range wall, a well at 1.0 Å (depth ``inner``) and one at 2.5 Å (1 eV)."""

    implemented_properties = ["energy"]

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        r = self.atoms.get_all_distances()[np.triu_indices(len(self.atoms), 1)]
        e = (0.6 / r) ** 12 - self.inner * np.exp(-((r - 1.0) / 0.2) ** 2) - np.exp(-((r - 2.5) / 0.3) ** 2)
        self.results = {"energy": float(e.sum())}


@pytest.mark.parametrize("inner,r_min,repulsive,single", [(0.0, 2.5, True, True), (2.0, 1.0, True, False),
                                                          (0.5, 2.5, False, False)])
def test_dimer_flags(inner, r_min, repulsive, single):
    m = Measurement()
    dimer_curve("Cu", PairWells(inner), 4.0, 0.0, m)
    assert m.values["dimer_r_min"] == pytest.approx(r_min, abs=0.03)
    assert (m.values["dimer_repulsive"], m.values["dimer_single_well"]) == (repulsive, single)


def test_rdf_peak_of_diamond_counts_four_neighbours():
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.02, seed=1)
    g, r = get_rdf(atoms, 5.0, 250)
    peak = rdf_peak(np.asarray(r), np.asarray(g), len(atoms) / atoms.get_volume(), cutoff=3.1)
    # The second shell (12 neighbours at 3.84 Å) is higher than the first (4 at 2.35 Å): the first is found.
    assert peak["rdf_peak_position"] == pytest.approx(5.431 * np.sqrt(3) / 4, abs=0.02)
    first = g[(r > 2.2) & (r < 2.5)].max()
    assert peak["rdf_peak_height"] == pytest.approx(first, rel=0.01) and first < g.max()
    assert peak["coordination"] == pytest.approx(4.0, abs=1e-4)  # ASE normalises bins by 4π r² dr
    smoothed = rdf_peak(np.asarray(r), np.asarray(g), len(atoms) / atoms.get_volume(), cutoff=3.1, smooth=0.05)
    assert smoothed["rdf_peak_position"] == pytest.approx(peak["rdf_peak_position"], abs=0.01)
    assert smoothed["rdf_peak_height"] < 0.8 * peak["rdf_peak_height"]  # a sharp peak is flattened
    assert smoothed["coordination"] == peak["coordination"]  # counted on the unsmoothed g


@pytest.mark.parametrize("name,elements,expected", [
    ("auto", ["Cu"], "emt"), ("auto", ["Cu", "Au"], "emt"), ("auto", ["Si"], "sw"), ("emt", ["Cu"], "emt"),
    ("sw", ["Si"], "sw"),
])
def test_resolve_reference(name, elements, expected):
    assert resolve_reference(name, elements) == expected


def test_crystal_without_a_recipe():
    with pytest.raises(ValueError, match=r"^no property benchmark for O: .* 'diatom'; supported: fcc, diamond$"):
        crystal_for("O")


@pytest.mark.parametrize("argv,message", [
    ([str(SI_MODEL), "--reference", "lj"], "unknown reference 'lj'; expected one of auto, emt, sw"),
    ([str(SI_MODEL), "--reference", "emt"], "reference 'emt' (ASE's EMT) has no parameters for Si; it covers Ag, Al, "
                                            "Au, C, Cu, H, N, Ni, O, Pd, Pt"),
    ([str(CU_MODEL), "--reference", "sw"], "reference 'sw' (Stillinger-Weber Si.sw through in-process LAMMPS) has no "
                                           "parameters for Cu; it covers Si only"),
    ([str(CU_MODEL), "--element", "Au"], "--element Au: not an element of the model (Cu)"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(["properties", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"mdpot: error: {message}\n"
    assert captured.out == ""


def test_cli_quick_writes_table_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    argv = ["properties", str(CU_MODEL), "--quick", "--num-threads", "1", "--json", str(out_json),
            "--plot", str(out_png), "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines()[0].endswith("vs reference emt (ASE's EMT), quick subset")
    report = json.loads(out_json.read_text())
    assert list(report["properties"]) == [k for k, *_ in PROPERTIES if k in QUICK_PROPERTIES]
    a = report["properties"]["lattice_constant"]
    assert a["unit"] == "Å" and a["difference"] == pytest.approx(a["model"] - a["reference"], abs=1e-12)
    assert report["reference"] == "emt" and report["r_max"] == 5.0 and report["quick"] is True
    assert report["curves"]["model"]["dimer_r"][0] == 0.5 and report["curves"]["model"]["dimer_r"][-1] == 5.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
