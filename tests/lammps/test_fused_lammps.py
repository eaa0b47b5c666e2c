"""Files deployed with ``--kernels fused`` (format version 8, docs/contract.md "Fused kernels") in LAMMPS: the same
numbers as the reference file through the ASE calculator, on 2 ranks, NequIP in ``message_passing exchange`` and
``ghosts`` mode (the block methods call the fused operators too, with the radial networks shared per distinct edge
length) and Allegro; a version-5 fused file written by an earlier mdpot; and the C++ loader's one line when
``libmdpot_ops.so`` cannot be loaded."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from lammps_helpers import (ELEMENTS, Reference, assert_results_close, atoms_from_frame, block, check_alone_refuses_fused,
                            read_block)
from mdpot.lammps.run import write_data
from mdpot.testing import alloy

TOL = 1e-10  # float64, relative (row 15)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """arch -> {"reference": path, "fused": path}, float64: NequIP l_max 2, 3 layers; Allegro l_max 2."""
    from mdpot.deploy import deploy_model
    from mdpot.testing import small_model

    folder = tmp_path_factory.mktemp("fused_models")
    models = {"nequip": small_model("nequip", ELEMENTS, seed=3, l_max=2, num_layers=3),
              "allegro": small_model("allegro", ELEMENTS, seed=3, l_max=2)}
    return {arch: {k: deploy_model(m, folder / f"{arch}_{k}.pt", kernels=k).path for k in ("reference", "fused")}
            for arch, m in models.items()}


@pytest.mark.parametrize("arch", ["nequip", "allegro"])
def test_fused_file_in_lammps_matches_reference(plugin, files, lammps, tmp_path, arch):
    atoms = alloy(ELEMENTS, (2, 2, 2), a=3.0, skew=0.1, rattle=0.1, seed=4)
    box = write_data(tmp_path / "a.data", atoms, ELEMENTS)
    modes = ("exchange", "ghosts") if arch == "nequip" else ("",)
    script = "".join(block(f"run{mode}", "a.data", box.boundary, f"pair_coeff * * {files[arch]['fused']} Cu Au",
                           pair_style=f"mdpot message_passing {mode}" if mode else "mdpot") for mode in modes)
    lammps(script, tmp_path, nprocs=2)
    reference = Reference({"float64": files[arch]["reference"]})
    for mode in modes:
        got = read_block(tmp_path, f"run{mode}")
        want = reference(atoms_from_frame(got["frame"], ELEMENTS), "float64")
        assert np.abs(want["forces"]).max() > 1e-2, "forces vanish, the comparison would be vacuous"
        assert_results_close(got, want, TOL, f"{arch} fused {mode or 'local'} np2 vs reference file in ASE")


def test_version5_fused_file_still_runs(plugin, lammps, tmp_path):
    """The shipped NequIP deployed with the fused kernels by the mdpot of stop 23 (format version 5, per-edge radial
    networks) loads in LAMMPS, runs on 2 ranks in ``exchange`` mode, and gives the numbers of the same checkpoint
    deployed now (version 8, radial networks shared per distinct length) through the ASE calculator."""
    from mdpot.deploy import deploy_checkpoint, load_model
    from mdpot.testing import fcc

    legacy = REPO / "tests" / "data" / "legacy_models" / "nequip-cu-emt-fused-v5.pt"
    meta = load_model(legacy).metadata
    assert (meta["mdpot_format_version"], meta["kernels"]) == (5, "fused")
    now = deploy_checkpoint(REPO / "examples" / "models" / "nequip-cu-emt" / "model.ckpt", tmp_path / "now.pt")
    assert now.metadata["mdpot_format_version"] == 8
    atoms = fcc("Cu", (3, 3, 3), a=3.61, rattle=0.05, seed=3)
    box = write_data(tmp_path / "cu.data", atoms, ["Cu"])
    lammps(block("run", "cu.data", box.boundary, f"pair_coeff * * {legacy} Cu",
                 pair_style="mdpot message_passing exchange"), tmp_path, nprocs=2)
    got = read_block(tmp_path, "run")
    want = Reference({"float64": now.path})(atoms_from_frame(got["frame"], ["Cu"]), "float64")
    assert np.abs(want["forces"]).max() > 1e-2
    assert_results_close(got, want, TOL, "version-5 fused file np2 exchange vs version 8 in ASE")


def test_runner_without_ops_library_refuses_in_one_line(plugin, files, tmp_path):
    from mdpot.lammps.plugin import CHECK_NAME

    check = Path(plugin).with_name(CHECK_NAME)
    fused = files["nequip"]["fused"]
    ok = subprocess.run([str(check), "check", str(fused)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK nequip float64"), ok.stdout + ok.stderr
    alone = check_alone_refuses_fused(plugin, fused, tmp_path)
    # a reference file needs no library
    ref = subprocess.run([str(alone), "check", str(files["nequip"]["reference"])], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stdout + ref.stderr
