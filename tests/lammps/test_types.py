"""LAMMPS type order and pair_style hybrid/overlay (docs/testing.md rows 21 and 22)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lammps_helpers import (ELEMENTS, assert_results_close, atoms_from_frame, block, overlay_expected, read_block,
                            tol)
from mdpot.lammps.run import write_data
from mdpot.testing import alloy

ZBL = "pair_coeff 1 1 {s}29 29\npair_coeff 1 2 {s}29 79\npair_coeff 2 2 {s}79 79"
BLOCKS = {
    # name: (data file, pair_style, pair_coeff lines)
    "plain": ("plain.data", "mdpot", "pair_coeff * * {model} Cu Au"),
    # types 1..4 = Au Cu Cu Au: model order reversed, types 3 and 4 have no atoms
    "permuted": ("permuted.data", "mdpot", "pair_coeff * * {model} Au Cu Cu Au"),
    # strictly local model evaluated in chunks of centre atoms of at most 40 edges per model call
    "chunked": ("plain.data", "mdpot max_edges 40 dump_edges chunked_edges", "pair_coeff * * {model} Cu Au"),
    "zbl": ("plain.data", "zbl 2.0 3.0", ZBL.format(s="")),
    "overlay": ("plain.data", "hybrid/overlay zbl 2.0 3.0 mdpot",
                "pair_coeff * * mdpot {model} Cu Au\n" + ZBL.format(s="zbl ")),
    "overlay_null": ("plain.data", "hybrid/overlay zbl 2.0 3.0 mdpot",
                     "pair_coeff * * mdpot {model} Cu NULL\n" + ZBL.format(s="zbl ")),
}
CASES = [("float64", 1), ("float64", 2), ("float32", 1)]


@pytest.fixture(scope="module")
def type_runs(plugin, models, lammps, tmp_path_factory):
    cache = {}

    def get(dtype, nprocs):
        if (dtype, nprocs) not in cache:
            workdir = tmp_path_factory.mktemp(f"types_{dtype}_np{nprocs}")
            atoms = alloy(ELEMENTS, (2, 2, 2), a=3.7, skew=0.1, rattle=0.15, seed=11)
            write_data(workdir / "plain.data", atoms, ["Cu", "Au"])
            write_data(workdir / "permuted.data", atoms, ["Au", "Cu", "Cu", "Au"])
            script = "".join(block(name, data, "p p p", coeff.format(model=models[dtype]), pair_style=style)
                             for name, (data, style, coeff) in BLOCKS.items())
            run = lammps(script, workdir, nprocs=nprocs)
            cache[dtype, nprocs] = {name: read_block(workdir, name) for name in BLOCKS}
            cache[dtype, nprocs]["output"] = run.output
            cache[dtype, nprocs]["chunk_headers"] = sum(
                f.read_text().count("# step") for f in workdir.glob("chunked_edges.*"))
        return cache[dtype, nprocs]

    return get


@pytest.mark.parametrize("dtype,nprocs", CASES)
def test_type_permutation_and_unused_types(type_runs, reference, dtype, nprocs):
    """Row 21: LAMMPS types in another order than the model's, two of them unused: same physics."""
    runs = type_runs(dtype, nprocs)
    assert set(runs["permuted"]["frame"]["type"]) == {1, 2}
    assert_results_close(runs["permuted"], runs["plain"], tol("lammps_types", dtype), "permuted vs plain types")
    want = reference(atoms_from_frame(runs["permuted"]["frame"], ["Au", "Cu", "Cu", "Au"]), dtype)
    assert_results_close(runs["permuted"], want, tol("lammps", dtype), "permuted types vs Python")


@pytest.mark.parametrize("dtype,nprocs", CASES)
def test_hybrid_overlay_is_sum_of_parts(type_runs, dtype, nprocs):
    """Row 22: hybrid/overlay zbl + mdpot = zbl + mdpot, term by term."""
    runs = type_runs(dtype, nprocs)
    parts = {k: runs["plain"][k] + runs["zbl"][k] for k in ("energy", "energies", "forces", "virial", "atom_virial")}
    assert np.abs(runs["zbl"]["forces"]).max() > 1e-3, "zbl contributes nothing: the test would be vacuous"
    assert_results_close(runs["overlay"], parts, tol("lammps", dtype), "overlay vs zbl + mdpot")


@pytest.mark.parametrize("dtype,nprocs", CASES)
def test_hybrid_overlay_with_null_type(type_runs, reference, dtype, nprocs):
    """NULL leaves type 2 (Au) to the other style: mdpot sees the Cu atoms only."""
    runs = type_runs(dtype, nprocs)
    frame = runs["overlay_null"]["frame"]
    cu = frame["type"] == 1
    want = overlay_expected(runs["zbl"], reference(atoms_from_frame(frame, ELEMENTS)[cu], dtype), cu)
    assert_results_close(runs["overlay_null"], want, tol("lammps", dtype), "overlay with NULL")


@pytest.mark.parametrize("dtype,nprocs", CASES)
def test_chunked_evaluation_is_exact(type_runs, arch, dtype, nprocs):
    """max_edges splits the centres of a strictly local model into several model calls, and each block of a
    message-passing model (``message_passing exchange``, the default) into calls on chunks of centres; every
    result is unchanged."""
    runs = type_runs(dtype, nprocs)
    if arch == "nequip":
        assert runs["chunk_headers"] == nprocs  # one pack per rank, chunked inside each block
        calls = [float(m) for m in re.findall(r"model_calls_per_step=(\S+)", runs["output"])]
        assert calls[2] > 5 * nprocs, "max_edges 40 should have produced many chunks"
        assert "is ignored" not in runs["output"]
    else:
        assert runs["chunk_headers"] > 5 * nprocs, "max_edges 40 should have produced many chunks"
    assert_results_close(runs["chunked"], runs["plain"], tol("lammps_types", dtype), "chunked vs one call")
