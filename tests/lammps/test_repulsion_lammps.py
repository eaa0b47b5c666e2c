"""The ZBL short-range repulsion (``model.repulsion``) in LAMMPS: NequIP with the pair term in its block interface
(format version 4) in ``message_passing exchange`` (one chunk and ``max_edges`` chunks) and ``ghosts``, and
Allegro, equal the ASE calculator at row 15's tolerance (energy, per-atom energy, forces, virial, per-atom virial)
on a periodic alloy with three close pairs (0.8, 1.0 and 1.2 Å, inside the switching radii), one across the
periodic boundary and one across the middle plane: rank boundaries under ``processors 2 1 1`` and ``4 1 1``.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from lammps_helpers import ELEMENTS, Reference, assert_results_close, atoms_from_frame, block, read_block, tol
from mdpot.lammps.run import write_data
from mdpot.testing import alloy, close_contacts

LAYOUTS = {1: None, 2: "2 1 1", 4: "4 1 1"}
STATS = re.compile(r"^mdpot stats: (.*)$", re.M)


@pytest.fixture(scope="module")
def close_pairs():
    """108 atoms, a 10.8 Å skewed cell; the only pairs closer than 1.4 Å are the three made here."""
    return close_contacts(alloy(ELEMENTS, (3, 3, 3), a=3.6, seed=11), (0.8, 1.0, 1.2), seed=1)


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_repulsion_matches_ase(plugin, repulsion_models, lammps, close_pairs, tmp_path, nprocs):
    nequip, allegro = repulsion_models["nequip"], repulsion_models["allegro"]
    box = write_data(tmp_path / "close.data", close_pairs, ELEMENTS)
    runs = {"exchange": (nequip, "message_passing exchange"), "ghosts": (nequip, "message_passing ghosts")}
    if nprocs == 2:
        runs["chunks"] = (nequip, "message_passing exchange max_edges 50")
        runs["allegro"] = (allegro, "")
    script = "".join(block(name, "close.data", box.boundary, f"pair_coeff * * {path} Cu Au",
                           pair_style=f"mdpot {options}".strip(), processors=LAYOUTS[nprocs])
                     for name, (path, options) in runs.items())
    run = lammps(script, tmp_path, nprocs=nprocs)
    stats = dict(zip(runs, (dict(item.split("=") for item in line.split()) for line in STATS.findall(run.output))))
    assert [s["mode"] for s in stats.values()] == [{"exchange": "exchange", "chunks": "exchange"}.get(name, "ghosts")
                                                   for name in runs]
    if "chunks" in stats:  # several chunks of centres per rank: the pair term runs per chunk, as the blocks do
        assert float(stats["chunks"]["model_calls_per_step"]) > 4

    for name, (path, _) in runs.items():
        got = read_block(tmp_path, name)
        atoms = atoms_from_frame(got["frame"], ELEMENTS)
        distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
        assert np.isclose(distances.min(), 0.8) and (distances < 1.3).sum() == 3
        want = Reference({"float64": path})(atoms, "float64")
        assert np.abs(want["forces"]).max() > 100.0, f"{name}: the repulsion is not active"
        assert_results_close(got, want, tol("lammps", "float64"), f"{name} on {nprocs} ranks vs ASE")
