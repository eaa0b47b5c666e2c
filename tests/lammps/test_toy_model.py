"""Pair-style paths the real (strictly local) Allegro model cannot reach, with the toy contract model of
make_pair_model.py: a 2-layer message-passing model (receptive field 2 r_max: ghost-centred edges and a
wider ghost shell, as NequIP will need) and a model that returns NaN."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import vesin

from lammps_helpers import assert_results_close, block, matrix_to_voigt, read_block, tol
from make_pair_model import make_model
from mdpot.lammps.run import write_data
from mdpot.testing import alloy, molecule

R_MAX = 4.5


def python_reference(model_file, frame, pbc) -> dict:
    """The scripted module on the LAMMPS positions with a vesin neighbour list (periodic shifts)."""
    module = torch.jit.load(str(model_file))
    pos = np.column_stack([frame["x"], frame["y"], frame["z"]])
    cell = frame["cell"]
    i, j, shifts = vesin.NeighborList(cutoff=R_MAX, full_list=True).compute(pos, cell, pbc, quantities="ijS")
    e, f, w, aw = module(torch.tensor(pos), torch.tensor(frame["type"] - 1), torch.tensor(np.stack([i, j]).astype(np.int64)),
                         torch.tensor(shifts.astype(np.float64) @ cell), len(pos), True)
    return {"energy": float(e.sum()), "energies": e.numpy(), "forces": f.numpy(),
            "virial": matrix_to_voigt(w.numpy()), "atom_virial": matrix_to_voigt(aw.numpy())}


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    make_model(str(folder / "wide.pt"), ["Cu", "Au"], R_MAX, num_layers=2)
    make_model(str(folder / "nan.pt"), ["Cu", "Au"], R_MAX, nan_element=1)
    make_model(str(folder / "refuses.pt"), ["Cu", "Au"], R_MAX, refused_element=1)
    return folder


SYSTEMS = {
    "small_triclinic": (lambda: alloy(("Cu", "Au"), (2, 2, 2), a=3.7, seed=1), "p p p"),
    # a cluster in the left half of a non-periodic box: with `processors 2 1 1` one rank owns nothing
    "cluster": (lambda: molecule(("Cu", "Au"), n_atoms=10, seed=2), "f f f"),
}


@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("system", SYSTEMS)
def test_message_passing_model(plugin, lammps, toy_models, tmp_path, system, nprocs):
    make, _ = SYSTEMS[system]
    box = write_data(tmp_path / "s.data", make(), ["Cu", "Au"], margin=8.0)
    lammps(block("s", "s.data", box.boundary, f"pair_coeff * * {toy_models / 'wide.pt'} Cu Au",
                  processors="* 1 1"), tmp_path, nprocs=nprocs)
    res = read_block(tmp_path, "s")
    frame = dict(res["frame"])
    frame["x"], frame["y"], frame["z"] = (frame[c] - frame["lo"][k] for k, c in enumerate("xyz"))
    want = python_reference(toy_models / "wide.pt", frame, box.boundary == "p p p")
    assert_results_close(res, want, tol("lammps", "float64"), f"{system} np{nprocs}")


FAULTS = {
    "nonfinite_output": ("nan.pt", "model returned non-finite energy/forces/virial on step 0 for atom IDs {a}, {b}"),
    "overlap": ("wide.pt", "atoms {a} and {b} overlap (distance 0 Å < 0.01 Å) on step 0"),
    "model_error": ("refuses.pt", "on step 0{rank}: model evaluation failed ({n} atoms, {n} edges): {any}RuntimeError: "
                                  "toy model refuses atoms of type 1"),
}


@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("fault", FAULTS)
def test_faults_stop_every_rank_with_one_message(plugin, lammps, toy_models, tmp_path, fault, nprocs):
    """A fault found on a rank other than 0 (the two bad atoms are in the upper half in x, rank 1's under
    `processors 2 1 1`) stops every rank together with rank 0's message (error->all), naming the atoms: a rank that
    stopped alone would abort the job, and mpirun under load can drop that rank's message."""
    atoms = alloy(("Cu",), (2, 2, 2), a=3.8, seed=0)
    upper = [k for k, s in enumerate(atoms.get_scaled_positions()) if 0.6 < s[0] < 0.9][:2]
    atoms.symbols[upper] = "Au"    # the element the NaN and the refusing models fail on
    if fault == "overlap":
        atoms.positions[upper[1]] = atoms.positions[upper[0]]
    write_data(tmp_path / "s.data", atoms, ["Cu", "Au"])
    model, message = FAULTS[fault]
    run = lammps(block("s", "s.data", "p p p", f"pair_coeff * * {toy_models / model} Cu Au",
                       processors="2 1 1" if nprocs == 2 else None), tmp_path, nprocs=nprocs, check=False)
    assert run.returncode != 0 and run.errors, run.output[-2000:]
    expected = "ERROR: pair mdpot: " + message.format(a=upper[0] + 1, b=upper[1] + 1, rank=" (rank 1)" * (nprocs == 2),
                                                      n="@N@", any="@ANY@")
    pattern = re.escape(expected).replace("@N@", r"\d+").replace("@ANY@", ".*")
    assert re.match(pattern, run.errors[0]), run.output[-2000:]
