"""Committees (docs/contract.md "Committee files", issue 15): the committee file (format version 7), the ASE spread,
``mdpot select`` and ``mdpot train --committee``. Small float64 Allegros; every deploy once per module. The whole
active-learning loop, LAMMPS and ``mdpot label`` included, runs in tests/lammps/test_active_learning.py."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

from mdpot import MDPotCalculator
from mdpot.cli import main
from mdpot.contract import COMMITTEE_FORMAT_VERSION
from mdpot.data import TypeMapper, atoms_to_graph
from mdpot.deploy import deploy_checkpoint, deploy_committee, deploy_model, load_model
from mdpot.models import create_checkpoint
from mdpot.selection import rms_displacement, select_frames
from mdpot.testing import small_model

ELEMENTS = ("Cu", "Au")
REL = 1e-10


def structure(seed=0, rattle=0.05):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    atoms.symbols[::3] = "Au"
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two checkpoints of different seeds, each deployed alone (reference kernels), the committee of both
    deployed by the CLI (fused kernels, the default) and a committee of one checkpoint twice."""
    folder = tmp_path_factory.mktemp("committee")
    config = small_model("allegro", ELEMENTS).config
    out = {"folder": folder}
    for name, seed in (("a", 0), ("b", 1)):
        out[f"{name}.ckpt"] = create_checkpoint(config, folder / f"{name}.ckpt", seed=seed)
        out[name] = deploy_checkpoint(out[f"{name}.ckpt"], folder / f"{name}.pt", kernels="reference").path
    out["committee"] = folder / "committee.pt"
    assert main(["deploy", str(out["a.ckpt"]), str(out["b.ckpt"]), "-o", str(out["committee"])]) == 0
    out["twins"] = deploy_committee([out["a.ckpt"], out["a.ckpt"]], folder / "twins.pt", kernels="reference").path
    return out


def results(model, atoms, **kw):
    calc = MDPotCalculator(model, **kw)
    atoms = atoms.copy()
    atoms.calc = calc
    calc.calculate(atoms, ["energy", "forces", "stress", "stresses"])
    return calc.results


def close(a, b, what, rel=REL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    assert np.abs(a - b).max(initial=0.0) <= rel * scale, f"{what}: {np.abs(a - b).max()} > {rel} * {scale}"


def test_committee_file_metadata(files, capsys):
    model = load_model(files["committee"])
    meta = model.metadata
    assert model.committee_size == 2 and meta["mdpot_format_version"] == COMMITTEE_FORMAT_VERSION
    assert meta["kernels"] == "fused" and meta["elements"] == ELEMENTS
    members = meta["committee_members"]
    assert [m["checkpoint"] for m in members] == ["a.ckpt", "b.ckpt"]
    assert [m["seed"] for m in members] == [0, 1]
    single = [load_model(files[n]).metadata for n in "ab"]
    assert [m["weights_sha256"] for m in members] == [s["weights_sha256"] for s in single]
    assert members[0]["config_sha256"] == members[1]["config_sha256"]
    assert members[0]["checkpoint_sha256"] == single[0]["provenance"]["checkpoint_sha256"]
    assert load_model(files["a"]).committee_size == 1


def test_identical_members_give_the_single_model_exactly(files):
    atoms = structure()
    single, twins = results(files["a"], atoms), results(files["twins"], atoms)
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        assert np.array_equal(twins[key], single[key]), key
    assert twins["energy_std"] == 0.0 and twins["max_force_std"] == 0.0
    assert not twins["forces_std"].any() and not twins["energies_std"].any()
    assert "energy_std" not in single
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="max_force_std property not implemented"):
        MDPotCalculator(files["a"]).get_property("max_force_std", atoms)
    assert MDPotCalculator(files["twins"]).get_property("max_force_std", atoms) == 0.0


def test_two_members_spread_by_hand(files):
    atoms = structure(seed=3)
    a, b, c = results(files["a"], atoms), results(files["b"], atoms), results(files["committee"], atoms)
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        close(c[key], (np.asarray(a[key]) + np.asarray(b[key])) / 2, key)
    close(c["energy_std"], abs(a["energy"] - b["energy"]) / 2, "energy_std")
    close(c["energies_std"], np.abs(a["energies"] - b["energies"]) / 2, "energies_std")
    by_hand = np.sqrt(((a["forces"] - b["forces"]) ** 2).sum(axis=1) / 4)  # |F_k - mean F|^2 = |F_a - F_b|^2 / 4
    close(c["forces_std"], by_hand, "forces_std")
    close(c["max_force_std"], by_hand.max(), "max_force_std")
    assert c["max_force_std"] > 1e-3  # different seeds disagree


def test_list_of_files_and_chunks_equal_the_committee_file(files):
    atoms = structure(seed=4)
    whole = results(files["committee"], atoms)
    listed = results([files["a"], files["b"]], atoms)
    chunked = results(files["committee"], atoms, max_edges=60)
    listed_chunked = results([str(files["a"]), str(files["b"])], atoms, max_edges=60)
    import pickle

    calc = pickle.loads(pickle.dumps(MDPotCalculator([files["a"], files["b"]])))  # members reload from their files
    assert calc.committee_size == 2 and calc.model is calc.members[0]
    pickled = results([m for m in calc.members], atoms)
    for key in ("energy", "energies", "forces", "stress", "stresses", "energy_std", "energies_std", "forces_std",
                "max_force_std"):
        for other, what in ((listed, "list"), (chunked, "chunks"), (listed_chunked, "list in chunks"),
                            (pickled, "pickled list")):
            close(other[key], whole[key], f"{what} {key}", rel=1e-12)


def test_committee_forward_stacks_every_member_with_ghosts(files):
    committee = load_model(files["committee"])
    singles = [load_model(files[n]) for n in "ab"]
    g = atoms_to_graph(structure(seed=5), 4.0, TypeMapper(ELEMENTS))
    n_local = g.num_atoms - 5
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, True)
    stacked = committee.module.committee_forward(*args)
    n = g.num_atoms
    assert [tuple(t.shape) for t in stacked] == [(2, n_local), (2, n, 3), (2, 3, 3), (2, n, 3, 3)]
    for k, single in enumerate(singles):
        for got, want in zip(stacked, single(*args)):
            close(got[k].detach(), want.detach(), f"member {k}", rel=1e-12)
    without = committee.module.committee_forward(*args[:-1], False)
    assert tuple(without[3].shape) == (2, 0, 3, 3)
    mean = committee(*args)
    close(mean[1].detach(), stacked[1].mean(0).detach(), "forward is the mean", rel=1e-13)


def test_message_passing_committee_equals_its_eager_members(tmp_path):
    """NequIP members (receptive field 2 r_max, no chunks): the committee file's results and spread vs a list of
    the two eager (never compiled) members."""
    from mdpot.deploy import eager_model

    models = [small_model("nequip", ELEMENTS, seed=k) for k in (0, 1)]
    committee = deploy_committee(models, tmp_path / "nequip.pt")
    assert committee.metadata["receptive_field"] == 2 * committee.r_max
    assert not hasattr(committee.module, "mp_block")  # no block interface: LAMMPS would run it whole-graph
    atoms = structure(seed=6)
    got = results(committee.path, atoms)
    want = results([eager_model(m, "float64") for m in models], atoms)
    for key in ("energy", "energies", "forces", "stress", "stresses", "energy_std", "energies_std", "forces_std",
                "max_force_std"):
        close(got[key], want[key], key)
    assert got["max_force_std"] > 1e-3


@pytest.mark.parametrize("change, message", [
    (dict(elements=("Au", "Cu")), "committee member 1 (Allegro) has elements Au Cu, member 0 (Allegro) has Cu Au"),
    (dict(r_max=4.5), "committee member 1 (Allegro) has r_max 4.5, member 0 (Allegro) has 4.0"),
])
def test_mismatched_members_are_refused(tmp_path, change, message):
    other = small_model("allegro", change.pop("elements", ELEMENTS), seed=1, **change)
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")
                       + ": members must share elements \\(in the same order\\), r_max, receptive field, architecture, "
                         "num_layers and dtype$"):
        deploy_committee([small_model("allegro", ELEMENTS), other], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_mismatched_dtype_single_member_and_cli_errors(files, tmp_path, capsys):
    f32 = deploy_model(small_model("allegro", ELEMENTS), tmp_path / "f32.pt", dtype="float32", kernels="reference")
    with pytest.raises(ValueError, match=f"^committee member 1 \\({tmp_path / 'f32.pt'}\\) has dtype float32, member 0 "
                                         f"\\({files['a']}\\) has float64: members must share"):
        MDPotCalculator([files["a"], f32.path])
    with pytest.raises(ValueError, match="^a committee needs at least 2 members, got 1"):
        MDPotCalculator([files["a"]])
    with pytest.raises(ValueError, match="^a committee needs at least 2 members, got 1; deploy a single model"):
        deploy_committee([files["a.ckpt"]], tmp_path / "one.pt")
    other = create_checkpoint(small_model("allegro", ("Cu",)).config, tmp_path / "cu.ckpt")
    assert main(["deploy", str(files["a.ckpt"]), str(other), "-o", str(tmp_path / "c.pt")]) == 1
    err = capsys.readouterr().err
    assert err == (f"mdpot: error: committee member 1 ({other}) has elements Cu, member 0 ({files['a.ckpt']}) has Cu Au: "
                   "members must share elements (in the same order), r_max, receptive field, architecture, num_layers "
                   "and dtype\n")
    assert main(["deploy", str(files["a.ckpt"]), str(files["b.ckpt"]), "-o", str(tmp_path / "c.pt2")]) == 1
    assert "a committee (several checkpoints) deploys to TorchScript only" in capsys.readouterr().err


def test_loader_refuses_a_committee_record_in_a_single_file(files, tmp_path):
    extra = {k: "" for k in ("mdpot_format_version", "architecture", "elements", "r_max", "num_layers",
                             "receptive_field", "model_dtype", "energy_units", "length_units", "torch_version",
                             "mdpot_version", "provenance", "config", "weights_sha256")}
    module = torch.jit.load(str(files["a"]), _extra_files=extra)
    torch.jit.save(module, tmp_path / "x.pt", _extra_files=dict(extra, committee_size="2"))
    with pytest.raises(ValueError, match=r"metadata committee_size in a file of mdpot_format_version 2 \(committee "
                                         r"files are version 7\); deploy it again$"):
        load_model(tmp_path / "x.pt")
    extra = {k: "" for k in list(extra) + ["committee_size", "committee_members", "kernels"]}
    module = torch.jit.load(str(files["committee"]), _extra_files=extra)
    torch.jit.save(module, tmp_path / "y.pt", _extra_files=dict(extra, committee_size="1"))
    with pytest.raises(ValueError, match=r"metadata committee_size must be an integer >= 2, got '1'$"):
        load_model(tmp_path / "y.pt")


# -- mdpot select -----------------------------------------------------------------------------------------------

def trajectory():
    """Frames rattled more and more (the committee's deviation grows with the rattle), frame 5 again shifted by a
    lattice vector (a duplicate under the minimum image) and a frame of other atoms."""
    frames = [structure(seed=k, rattle=0.02 + 0.03 * k) for k in range(5)]
    twin = frames[4].copy()
    twin.positions += twin.cell[0] + 1e-4
    frames.append(twin)
    other = structure(seed=9, rattle=0.1)
    other.symbols[1] = "Au"
    frames.append(other)
    return frames


def max_force_stds(frames, calc) -> list:
    """``max_force_std`` of every frame through the calculator."""
    scores = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        scores.append(calc.results["max_force_std"])
    return scores


def test_select_ranks_and_drops_near_duplicates(files, tmp_path):
    frames = trajectory()
    calc = MDPotCalculator(files["committee"])
    scores = max_force_stds(frames, calc)
    assert abs(scores[5] - scores[4]) < 1e-9 * scores[4]
    assert rms_displacement(frames[5], frames[4]) == pytest.approx(1e-4 * np.sqrt(3), rel=1e-6)
    ranking = sorted(range(len(frames)), key=lambda k: (-scores[k], k))
    picked = select_frames(frames, calc, top=len(frames), min_distance=0.01)
    duplicate = max(4, 5, key=ranking.index)  # the later-ranked of the twins goes
    assert [p.frame for p in picked] == [k for k in ranking if k != duplicate]
    assert [p.frame for p in select_frames(frames, calc, top=len(frames), min_distance=0.0)] == ranking
    assert [p.frame for p in select_frames(frames, calc, top=2, min_distance=0.01)] == \
        [k for k in ranking if k != duplicate][:2]
    # a large distance keeps one frame per set of atoms: the best of the six alike and the other one
    assert [p.frame for p in select_frames(frames, calc, top=5, min_distance=100.0)] == \
        sorted([ranking[0] if ranking[0] != 6 else ranking[1], 6], key=ranking.index)


def write_dump(path, frames, types):
    """A LAMMPS text dump (id type x y z) of orthogonal frames, atom types given per element."""
    with open(path, "w") as fh:
        for step, atoms in enumerate(frames):
            lx, ly, lz = atoms.cell.lengths()
            fh.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(atoms)}\n"
                     f"ITEM: BOX BOUNDS pp pp pp\n0 {lx}\n0 {ly}\n0 {lz}\nITEM: ATOMS id type x y z\n")
            for i, (symbol, (x, y, z)) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions)):
                fh.write(f"{i + 1} {types[symbol]} {x:.10f} {y:.10f} {z:.10f}\n")


def test_select_cli_on_a_lammps_dump(files, tmp_path, capsys):
    frames = trajectory()[:5]
    write_dump(tmp_path / "md.dump", frames, {"Cu": 1, "Au": 2})
    out = tmp_path / "picked.extxyz"
    argv = ["select", str(tmp_path / "md.dump"), "--format", "lammps-dump-text", "--elements", "Cu", "Au",
            "--model", str(files["a"]), str(files["b"]), "--top", "2", "-o", str(out)]
    assert main(argv) == 0
    picked = ase.io.read(out, index=":")
    calc = MDPotCalculator(files["committee"])
    scores = max_force_stds(frames, calc)
    best = sorted(range(5), key=lambda k: -scores[k])[:2]
    assert [a.info["source_frame"] for a in picked] == best
    for rank, atoms in enumerate(picked):
        assert atoms.info["selection_rank"] == rank
        assert atoms.get_chemical_symbols() == frames[best[rank]].get_chemical_symbols()
        assert atoms.info["committee_max_force_std"] == pytest.approx(scores[best[rank]], rel=1e-6)
        assert atoms.calc is None or "forces" not in atoms.calc.results  # nothing a labeller could mistake
    assert f"wrote {out}: 2 of 5 frames by committee force deviation (2 members)" in capsys.readouterr().out
    assert main(argv[:6] + argv[7:] + ["--force"]) == 1  # --elements Cu: type 2 unnamed
    assert capsys.readouterr().err == "mdpot: error: frame 0 has atom type 2 but --elements names 1 type(s) (Cu)\n"
    assert main(["select", str(tmp_path / "md.dump"), "--model", str(files["a"]), "--top", "1", "-o",
                 str(tmp_path / "x.extxyz")]) == 1
    assert capsys.readouterr().err.startswith(f"mdpot: error: {files['a']}: is a single model; mdpot select needs a "
                                              "committee file")


# -- mdpot train --committee -------------------------------------------------------------------------------------

def test_train_committee_writes_distinct_members(tmp_path, capsys):
    from ase.calculators.emt import EMT

    from mdpot.testing.models import SMALL_OPTIONS
    from mdpot.train import load_train_config

    frames = []
    for k in range(6):
        atoms = structure(seed=k, rattle=0.05)
        atoms.calc = EMT()
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL_OPTIONS["allegro"].items()}
    options["elements"] = list(ELEMENTS)
    config = {"architecture": "allegro", "model": options,
              "data": {"train": "train.xyz", "val_fraction": 0.34},
              "training": {"seed": 3, "max_epochs": 1, "batch_size": 2, "early_stopping_patience": None}}
    (tmp_path / "c.yaml").write_text(json.dumps(config))  # JSON is YAML
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "c.yaml"), "-o", str(run), "--committee", "2", "--bootstrap",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"  mdpot deploy {run / 'member_0' / 'best.ckpt'} {run / 'member_1' / 'best.ckpt'} -o {run / 'committee.pt'}" \
        in out
    assert out.count("bootstrap: 4 training structures drawn with replacement") == 2
    seeds, weights = [], []
    for k in range(2):
        cfg = load_train_config(run / f"member_{k}" / "config.yaml")
        seeds.append(cfg.training.seed)
        assert cfg.training.bootstrap
        weights.append(torch.load(run / f"member_{k}" / "best.ckpt", weights_only=True)["state_dict"])
    assert seeds == [3, 4]
    assert any(not torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    with pytest.raises(SystemExit, match="2"):
        main(["train", str(tmp_path / "c.yaml"), "-o", str(run), "--committee", "1"])
    assert "expected a committee of at least 2 members, got '1'" in capsys.readouterr().err
