"""AOTInductor packages (``.pt2``) in the pair style: the LAMMPS rows of docs/testing.md that exercise the second
backend of the model runner, not every TorchScript case again.

One LAMMPS process per (architecture, dtype, ranks) runs the blocks below with the package of ``aoti_models``:
periodic, slab and isolated systems (an atom without edges, ranks without atoms on 4 ranks), LAMMPS types in
another order, hybrid/overlay with a NULL type, and for the strictly local Allegro ``max_edges`` chunks (several
program calls of other atom and edge counts per step). Results are compared with the ASE calculator on the same
package (rows 15, 16, 20, 21, 22, 23; per-atom virial included). A short MD run with restart and data
continuations covers row 18, and the message-passing NequIP package runs in ``message_passing ghosts`` (it has
no block interface); an explicit ``exchange`` is a one-line error naming the file and the fix.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from lammps_helpers import (ELEMENTS, assert_results_close, atoms_from_frame, block, check_alone_refuses_fused,
                            overlay_expected, read_block, tol)
from mdpot.lammps.run import write_data
from mdpot.testing import alloy, assert_allclose
from mdpot.testing.aoti import case_kernels

from test_md import SCRIPT as MD_SCRIPT, STEPS, initial_state
from test_systems import SYSTEMS as ALL_SYSTEMS
from test_types import BLOCKS as TYPE_BLOCKS

SYSTEMS = {name: ALL_SYSTEMS[name] for name in ("cubic", "slab", "isolated")}
TYPES = {name: TYPE_BLOCKS[name] for name in ("plain", "permuted", "chunked", "zbl", "overlay_null")}
# (dtype, ranks, processors grid): 4 ranks along z leave ranks of the slab and the isolated atoms empty
CASES = [("float64", 1, None), ("float64", 4, "1 1 4"), ("float32", 2, None)]
STATS = re.compile(r"^mdpot stats: (.*)$", re.M)


def case_id(case) -> str:
    return f"{case[0]}-np{case[1]}"


@pytest.fixture(scope="session")
def package_reference(aoti_models):
    """``ref(atoms, arch, dtype)``: the ASE calculator on the package, in LAMMPS conventions."""
    from lammps_helpers import Reference

    cache = {}

    def get(atoms, arch, dtype):
        if arch not in cache:
            cache[arch] = Reference({d: aoti_models[arch, d] for d in ("float64", "float32")})
        return cache[arch](atoms, dtype)

    return get


@pytest.fixture(scope="session")
def package_runs(plugin, aoti_models, lammps, tmp_path_factory):
    """``get(arch, dtype, nprocs, grid)`` -> {block: results, "output": log} for one LAMMPS process."""
    cache = {}

    def get(arch, dtype, nprocs, grid):
        key = (arch, dtype, nprocs, grid)
        if key not in cache:
            model = aoti_models[arch, dtype]
            workdir = tmp_path_factory.mktemp(f"aoti_{arch}_{dtype}_np{nprocs}")
            script = []
            for name, (atoms, extra, general) in SYSTEMS.items():
                box = write_data(workdir / f"{name}.data", atoms, ELEMENTS, general_triclinic=general)
                script.append(block(name, f"{name}.data", box.boundary, f"pair_coeff * * {model} Cu Au",
                                    pair_style="mdpot device cpu", processors=grid, extra=extra))
            atoms = alloy(ELEMENTS, (2, 2, 2), a=3.7, skew=0.1, rattle=0.15, seed=11)
            write_data(workdir / "plain.data", atoms, ["Cu", "Au"])
            write_data(workdir / "permuted.data", atoms, ["Au", "Cu", "Cu", "Au"])
            for name, (data, style, coeff) in TYPES.items():
                script.append(block(name, data, "p p p", coeff.format(model=model), pair_style=style))
            run = lammps("".join(script), workdir, nprocs=nprocs)
            results = {name: read_block(workdir, name) for name in [*SYSTEMS, *TYPES]}
            results["output"] = run.output
            results["chunk_headers"] = sum(f.read_text().count("# step") for f in workdir.glob("chunked_edges.*"))
            cache[key] = results
        return cache[key]

    return get


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_package_matches_python(package_runs, package_reference, arch, case):
    """Rows 15, 20, 23: E, pe/atom, F, virial and per-atom virial of the package in LAMMPS vs ASE on the same
    package, periodic, slab and isolated atoms (an atom without edges; empty ranks on 4 ranks)."""
    dtype = case[0]
    runs = package_runs(arch, *case)
    for system in SYSTEMS:
        res = runs[system]
        want = package_reference(atoms_from_frame(res["frame"], ELEMENTS), arch, dtype)
        assert_results_close(res, want, tol("lammps", dtype), f"{arch} package {system} {case_id(case)}")
    assert np.abs(runs["cubic"]["forces"]).max() > 1e-2, "vacuous test: forces are ~0"
    stats = [dict(item.split("=") for item in line.split()) for line in STATS.findall(runs["output"])]
    assert stats and all(s["format"] == "aoti" for s in stats), runs["output"][-2000:]
    assert all(s["mode"] == "ghosts" for s in stats)  # no block interface: nequip's ghost shell too
    fused = ", fused kernels" if case_kernels(arch, dtype) == "fused" else ""
    assert f"{dtype}, AOTInductor package{fused}) on cpu" in runs["output"]
    # the fixture's packages have dynamic loops and run at one thread per rank: the log suggests a serial package
    assert "1 torch thread(s) per rank" in runs["output"]
    assert ("mdpot: note: this package was compiled with dynamic threads, whose scatters are atomic adds even on "
            "one thread; with one thread per rank, a package deployed with --aoti-threads serial") in runs["output"]


def test_package_rank_invariance(package_runs, arch):
    """Row 16: 4 ranks (two of them without atoms of the slab) give the 1-rank result."""
    one, four = package_runs(arch, *CASES[0]), package_runs(arch, *CASES[1])
    for system in SYSTEMS:
        what = f"{arch} package {system} np4 vs np1"
        assert_allclose(four[system]["energy"], one[system]["energy"], tol("lammps_ranks_energy", "float64"), what)
        assert_results_close(four[system], one[system], tol("lammps_ranks", "float64"), what,
                             keys=("energies", "forces", "virial", "atom_virial"))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_package_types_overlay_and_chunks(package_runs, package_reference, arch, case):
    """Rows 21 and 22: types in another order, hybrid/overlay with a NULL type; max_edges chunks of a strictly
    local package (calls with other atom and edge counts) leave every result unchanged."""
    dtype = case[0]
    runs = package_runs(arch, *case)
    assert_results_close(runs["permuted"], runs["plain"], tol("lammps_types", dtype), "permuted vs plain types")
    want = package_reference(atoms_from_frame(runs["permuted"]["frame"], ["Au", "Cu", "Cu", "Au"]), arch, dtype)
    assert_results_close(runs["permuted"], want, tol("lammps", dtype), "permuted types vs Python")
    frame = runs["overlay_null"]["frame"]
    cu = frame["type"] == 1
    want = overlay_expected(runs["zbl"], package_reference(atoms_from_frame(frame, ELEMENTS)[cu], arch, dtype), cu)
    assert_results_close(runs["overlay_null"], want, tol("lammps", dtype), "overlay with NULL")
    if arch == "allegro":
        assert runs["chunk_headers"] > 5 * case[1], "max_edges 40 should have produced many chunks"
    assert_results_close(runs["chunked"], runs["plain"], tol("lammps_types", dtype), "chunked vs one call")


@pytest.fixture(scope="session")
def package_md(plugin, aoti_models, lammps, tmp_path_factory):
    """The MD script of test_md (run 0, run 4, restart and data continuations to step 10) on 2 ranks with the
    float64 package of each architecture."""
    from test_md import md_results

    cache = {}

    def get(arch):
        if arch not in cache:
            workdir = tmp_path_factory.mktemp(f"aoti_md_{arch}")
            write_data(workdir / "md.data", initial_state(), ELEMENTS, velocities=True)
            lammps(MD_SCRIPT.format(model=aoti_models[arch, "float64"]), workdir, nprocs=2)
            cache[arch] = md_results(workdir)
        return cache[arch]

    return get


@pytest.mark.parametrize("branch", ["restart", "data"])
def test_package_md_continuation(package_md, package_reference, arch, branch):
    """Row 18 with a package: steps 0 and 4 vs ASE, and the restart / data continuations reproduce steps 5-10."""
    runs = package_md(arch)
    for step in (0, 4):
        res = runs["cont"][step]
        want = package_reference(atoms_from_frame(res["frame"], ELEMENTS), arch, "float64")
        assert_results_close(res, want, tol("lammps", "float64"), f"step {step}")
    t = tol("lammps_regression", "float64")
    for step in range(5, STEPS + 1):
        got, want = runs[branch][step], runs["cont"][step]
        assert_results_close(got, want, t, f"{branch} step {step}", keys=("energy", "energies", "forces", "virial"))
        assert_allclose(got["pos"], want["pos"], t, f"{branch} step {step}: positions")
    assert np.abs(runs["cont"][STEPS]["pos"] - runs["cont"][0]["pos"]).max() > 1e-3, "atoms barely moved"


def test_package_exchange_is_refused(plugin, aoti_models, lammps, tmp_path):
    """A package has no block interface: an explicit ``message_passing exchange`` stops with one line naming the
    file and the fix; the default runs it in ghosts mode (the test above)."""
    model = aoti_models["nequip", "float64"]
    atoms = alloy(ELEMENTS, (2, 2, 2), a=3.7, seed=7)
    box = write_data(tmp_path / "a.data", atoms, ELEMENTS)
    bad = lammps(block("bad", "a.data", box.boundary, f"pair_coeff * * {model} Cu Au",
                       pair_style="mdpot message_passing exchange"), tmp_path, check=False)
    assert bad.returncode != 0
    assert bad.errors and (f"pair mdpot: message_passing exchange: model '{model}' cannot be run block by block: it "
                           "is an AOTInductor package: one compiled whole-graph program, without the block-by-block "
                           "(mp_*) methods; use message_passing ghosts") in bad.errors[0], bad.output[-2000:]


def test_fused_package_without_ops_library_refuses_in_one_line(plugin, aoti_models, tmp_path):
    """The C++ runner registers mdpot's operators (``libmdpot_ops.so`` beside it) before AOTInductor loads a version-6
    package; without the library the package is refused in one line naming it and the remedy, while a version-3
    package needs none."""
    import subprocess

    by_kernels = {case_kernels(*case): path for case, path in aoti_models.items()}
    alone = check_alone_refuses_fused(plugin, by_kernels["fused"], tmp_path)
    ok = subprocess.run([str(alone), "check", str(by_kernels["reference"])], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("OK "), ok.stdout + ok.stderr
