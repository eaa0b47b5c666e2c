"""Files deployed with ``--kernels fused`` (format version 5, docs/contract.md "Fused kernels") in LAMMPS: the same
numbers as the reference file through the ASE calculator, on 2 ranks, NequIP in ``message_passing exchange`` and
``ghosts`` mode (the block methods call the fused operators too) and Allegro; and the C++ loader's one line when
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
