"""Row 27 of docs/testing.md (CLI) and the model-file bad inputs."""
import hashlib
import json
import zipfile

import pytest
import torch
import yaml

from mdpot.cli import main
from mdpot.deploy import SelfCheckError, deploy_model, load_model
from mdpot.deploy import metadata as md
from mdpot.testing import SMALL_OPTIONS, small_model


@pytest.fixture()
def checkpoint(tmp_path, arch):
    cfg = tmp_path / "model.yaml"
    options = dict(SMALL_OPTIONS[arch], elements=["Cu", "Au"])
    cfg.write_text(yaml.safe_dump({"architecture": arch, "model": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}))
    ckpt = tmp_path / "model.ckpt"
    assert main(["init", str(cfg), "-o", str(ckpt), "--seed", "3"]) == 0
    return ckpt


def test_help_exits_zero(capsys):
    """In-process (the module entry point runs in test_messages.py's subprocess tests)."""
    for argv in (["--help"], *([sub, "--help"] for sub in ("init", "deploy", "info", "check", "doctor", "demo",
                                                              "data", "train", "validate", "label"))):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out = capsys.readouterr().out
        assert exc.value.code == 0 and out.startswith(f"usage: mdpot {argv[0] if len(argv) == 2 else ''}".rstrip()), argv
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(sub in out for sub in ("deploy", "info", "check", "validate"))


def test_usage_error_exit_two(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["deploy"])
    assert exc.value.code == 2


def test_deploy_info_check(tmp_path, checkpoint, capsys):
    out = tmp_path / "m.pt"
    assert main(["deploy", str(checkpoint), "-o", str(out), "--dtype", "float32"]) == 0
    assert "self-check passed" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["elements"] == ["Cu", "Au"] and info["model_dtype"] == "float32"
    assert info["num_parameters"] == load_model(out).num_parameters > 0
    assert info["provenance"]["checkpoint"] == checkpoint.name  # its name and digest, not this machine's path
    assert info["provenance"]["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert main(["check", str(out), "--checkpoint", str(checkpoint)]) == 0
    text = capsys.readouterr().out
    assert text.count("PASS") == 5 and "FAIL" not in text


def test_no_overwrite_without_force(tmp_path, checkpoint, capsys):
    out = tmp_path / "m.pt"
    out.write_text("precious")
    assert main(["deploy", str(checkpoint), "-o", str(out)]) == 1
    assert capsys.readouterr().err.strip() == f"mdpot: error: {out} exists; pass --force to overwrite it"
    assert out.read_text() == "precious"
    assert main(["deploy", str(checkpoint), "-o", str(out), "--force"]) == 0
    assert main(["init", "-o", str(checkpoint)]) == 1


def _tamper(path, out):
    """Change one weight of a deployed model, keeping its metadata, as a hand edit would."""
    extra = {k: "" for k in md.ALL_KEYS + (md.KERNELS_KEY,)}
    module = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        next(iter(module.parameters())).add_(1e-3)
    torch.jit.save(module, str(out), _extra_files={k: v for k, v in extra.items() if v or k in md.ALL_KEYS})


def test_tampered_model_fails(tmp_path, checkpoint, capsys):
    good = tmp_path / "m.pt"
    assert main(["deploy", str(checkpoint), "-o", str(good)]) == 0
    bad = tmp_path / "tampered.pt"
    _tamper(good, bad)
    capsys.readouterr()
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "weights do not match the digest recorded at deploy" in err and "modified after `mdpot deploy`" in err
    with pytest.raises(ValueError, match="weights do not match"):
        main(["--debug", "info", str(bad)])  # --debug re-raises, so the traceback is shown


def test_self_check_failure_blocks_write(tmp_path, monkeypatch):
    """A compiled model that disagrees with the eager one is never written."""
    import mdpot.deploy.compile as compile_mod

    real_load = compile_mod.load_model

    def corrupted_load(path, device="cpu"):
        loaded = real_load(path, device)
        with torch.no_grad():
            next(iter(loaded.module.parameters())).mul_(1.01)
        return loaded

    monkeypatch.setattr(compile_mod, "load_model", corrupted_load)
    out = tmp_path / "m.pt"
    with pytest.raises(SelfCheckError, match=r"compiled model does not match the eager model: self-check per-atom energy: "
                                             r"max \|error\| .* exceeds tolerance 1.0e-12 .* magnitude max \|expected\|"):
        deploy_model(small_model("allegro"), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated", "foreign_zip", "version", "version3", "missing_key",
                                  "arch"])
def test_bad_model_files(tmp_path, case, capsys):
    good = tmp_path / "good.pt"
    deploy_model(small_model("allegro"), good)
    path = tmp_path / f"{case}.pt"
    extra = {k: "" for k in md.ALL_KEYS}
    if case == "corrupt":
        path.write_bytes(b"\x00garbage" * 100)
        expected = f"{path}: not an mdpot model (neither a TorchScript archive nor an AOTInductor package; truncated or corrupt?)"
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        expected = f"{path}: not an mdpot model (neither a TorchScript archive nor an AOTInductor package; truncated or corrupt?)"
    elif case == "foreign_zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "not a model")
        expected = f"{path}: not a loadable mdpot model ("
    elif case == "missing":
        expected = f"model file not found: {path.resolve()}"
    else:
        module = torch.jit.load(str(good), _extra_files=extra)
        if case == "version":
            extra[md.FORMAT_VERSION_KEY] = "99"
            expected = (f"{path}: model format version 99 is not supported (this mdpot reads versions 1, 2, 4, 5, 7, 8 of "
                        f"TorchScript files and 3, 6 of AOTInductor packages)")
        elif case == "version3":
            extra[md.FORMAT_VERSION_KEY] = "3"
            expected = (f"{path}: a TorchScript file claiming model format version 3 (TorchScript files are "
                        f"versions 1, 2, 4, 5, 7, 8); deploy it again")
        elif case == "missing_key":
            del extra[md.R_MAX]
            expected = f"{path}: missing mdpot metadata key(s) ['r_max']; is this a model written by `mdpot deploy`?"
        else:
            extra[md.ARCHITECTURE] = "mace"
            expected = f"{path}: unknown architecture 'mace'; expected one of ['allegro', 'nequip']"
        torch.jit.save(module, str(path), _extra_files=extra)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mdpot: error: {expected}"), err
    assert "\n" not in err


def test_bad_config(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"architecture": "allegro", "model": {"elements": ["Cu", "Xx"]}}))
    assert main(["init", str(cfg), "-o", str(tmp_path / "x.ckpt")]) == 1
    assert capsys.readouterr().err.strip() == f"mdpot: error: {cfg}: model: unknown chemical symbol 'Xx' in elements ['Cu', 'Xx']"
    cfg.write_text(yaml.safe_dump({"architecture": "allegro", "model": {"elements": ["Cu"], "r_cut": 4.0}}))
    assert main(["init", str(cfg), "-o", str(tmp_path / "x.ckpt")]) == 1
    assert "unknown allegro option(s) ['r_cut']" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "x.ckpt")]) == 1
    assert "config file not found" in capsys.readouterr().err


# -- mdpot label (docs/active_learning.md) ------------------------------------------------------------------------

def _picked(path, symbols=("Cu", "Cu", "Cu", "Cu")):
    """Two 4-atom FCC frames as `mdpot select` writes them (no labels; committee info and per-atom spread), the
    second with an atom outside its cell; and the frames themselves."""
    import ase.io
    import numpy as np
    from ase.build import bulk

    frames = []
    for k in range(2):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.symbols = list(symbols)
        atoms.rattle(0.1, seed=k)
        atoms.info.update(committee_max_force_std=0.5 - 0.1 * k, committee_energy_std=0.01, source_frame=7 - k,
                          selection_rank=k)
        atoms.arrays["committee_forces_std"] = np.array([0.1, 0.2, 0.3, 0.4])
        frames.append(atoms)
    frames[1].positions[0] += frames[1].cell[0] * 1.2
    ase.io.write(path, frames, format="extxyz")
    return frames


def test_label_writes_emt_labels_and_keeps_the_selection(tmp_path, capsys):
    import ase.io
    import numpy as np
    from ase.calculators.emt import EMT

    from mdpot.data import load_labelled

    _picked(tmp_path / "picked.extxyz")
    frames = ase.io.read(tmp_path / "picked.extxyz", index=":")  # the positions as labelled
    out = tmp_path / "new.xyz"
    assert main(["label", str(tmp_path / "picked.extxyz"), "--reference", "cu-emt", "-o", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"labelled 2 frames of {tmp_path / 'picked.extxyz'} with EMT (cu-emt, kind selected) in ")
    assert text.endswith(f"wrote {out}\n")
    got = ase.io.read(out, index=":")
    for k, (atoms, source) in enumerate(zip(got, frames)):
        assert atoms.info == {"kind": "selected", "system": "cu-emt", "committee_max_force_std": 0.5 - 0.1 * k,
                              "committee_energy_std": 0.01, "source_frame": 7 - k, "selection_rank": k}
        np.testing.assert_array_equal(atoms.arrays["committee_forces_std"], np.array([0.1, 0.2, 0.3, 0.4]))
        wrapped = source.copy()
        wrapped.wrap()
        assert np.all((atoms.get_scaled_positions(wrap=False) >= 0) & (atoms.get_scaled_positions(wrap=False) < 1))
        np.testing.assert_allclose(atoms.positions, wrapped.positions, rtol=0, atol=1e-8)  # extxyz: 8 decimals
        wrapped.calc = EMT()
        assert atoms.get_potential_energy() == wrapped.get_potential_energy()
        np.testing.assert_allclose(atoms.get_forces(), wrapped.get_forces(), rtol=0, atol=1e-8)  # 8 decimals
        np.testing.assert_array_equal(atoms.get_stress(), wrapped.get_stress())
        assert np.abs(atoms.get_forces()).max() > 0.1
    train = load_labelled(out)  # what `mdpot train` reads
    assert [t.energy for t in train] == [a.get_potential_energy() for a in got]
    assert all(t.stress is not None for t in train)


def test_label_uses_the_function_of_mdpot_data():
    """Frames of `mdpot data cuau-emt` (rattled, MD, isolated atoms, a dimer) labelled again: the same labels (to the rounding
    of wrapping the wrapped positions once more) and info; non-periodic frames get no stress, as in `mdpot data`."""
    import numpy as np

    from mdpot.data.reference import reference_dataset, short_range_dataset
    from mdpot.data.reference.labels import label_structures

    data = reference_dataset("cuau-emt", 2, seed=1, progress=False)
    data += short_range_dataset("cuau-emt", 10, seed=1, progress=False)  # 2 isolated atoms, 1 dimer
    assert [a.info["kind"] for a in data] == ["rattled", "md", "isolated", "isolated", "dimer"]
    for atoms in data:
        again = label_structures("cuau-emt", [atoms], kind=atoms.info["kind"], progress=False)[0]
        assert again.info == atoms.info
        assert again.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(again.get_forces(), atoms.get_forces(), rtol=0, atol=1e-10)
        assert ("stress" in again.calc.results) == ("stress" in atoms.calc.results) == atoms.pbc.all()
        if atoms.pbc.all():
            np.testing.assert_allclose(again.get_stress(), atoms.get_stress(), rtol=0, atol=1e-12)


def test_label_stillinger_weber_periodic_and_molecule(tmp_path, capsys):
    """si-sw: a periodic cell gets LAMMPS's Stillinger-Weber labels with stress; a trimer without a cell is labelled
    in a box wide enough that it is alone (its energy equals the one in a 30 Å box), without stress."""
    import ase.io
    import numpy as np
    from ase import Atoms
    from ase.build import bulk

    from mdpot.lammps.embedded import StillingerWeberSi

    si = bulk("Si", "diamond", a=5.431, cubic=True)
    si.rattle(0.05, seed=1)
    trimer = Atoms("Si3", positions=[[0, 0, 0], [2.3, 0, 0], [1.0, 2.0, 0]])
    ase.io.write(tmp_path / "si.extxyz", [si, trimer], format="extxyz")
    out = tmp_path / "si_train.xyz"
    assert main(["label", str(tmp_path / "si.extxyz"), "--reference", "si-sw", "-o", str(out), "--kind", "hot",
                 "--no-progress"]) == 0
    got = ase.io.read(out, index=":")
    assert [a.info["kind"] for a in got] == ["hot", "hot"] and got[1].info["system"] == "si-sw"
    calc = StillingerWeberSi()
    si = ase.io.read(tmp_path / "si.extxyz", index=0)  # the positions as labelled: 8 decimals
    si.calc = calc
    assert got[0].get_potential_energy() == pytest.approx(si.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(got[0].get_stress(), si.get_stress(), rtol=1e-10, atol=0)
    alone = trimer.copy()
    alone.set_cell([30.0, 30.0, 30.0])
    alone.positions += 10.0
    alone.pbc = True
    alone.calc = calc
    assert got[1].get_potential_energy() == pytest.approx(alone.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(got[1].get_forces(), alone.get_forces(), rtol=0, atol=1e-8)
    assert "stress" not in got[1].calc.results and abs(alone.get_potential_energy()) > 1.0
    calc.close()


def test_label_refuses_overwrite_appends_and_forces(tmp_path, capsys):
    import ase.io

    _picked(tmp_path / "picked.extxyz")
    out = tmp_path / "train.xyz"
    base = ["label", str(tmp_path / "picked.extxyz"), "--reference", "cu-emt", "-o", str(out), "--no-progress"]
    assert main(base) == 0
    first = out.read_bytes()
    assert main(base) == 1
    assert capsys.readouterr().err == (f"mdpot: error: {out} exists; pass --append to add the labelled frames to it, "
                                       "or --force to overwrite it\n")
    assert out.read_bytes() == first
    assert main(base + ["--append", "--kind", "again"]) == 0
    assert capsys.readouterr().out.endswith(f"appended them to {out}: 4 frames now\n")
    grown = out.read_bytes()
    assert grown.startswith(first)
    assert [a.info["kind"] for a in ase.io.read(out, index=":")] == ["selected", "selected", "again", "again"]
    assert main(base + ["--force"]) == 0
    assert out.read_bytes() == first
    fresh = tmp_path / "fresh.xyz"
    assert main(base[:5] + [str(fresh), "--append"]) == 0  # --append to a missing file writes it
    assert fresh.read_bytes() == first
    with pytest.raises(SystemExit) as exc:
        main(base + ["--append", "--force"])
    assert exc.value.code == 2 and "argument --force: not allowed with argument --append" in capsys.readouterr().err


def test_label_errors(tmp_path, monkeypatch, capsys):
    import ase.io
    from ase.build import bulk

    _picked(tmp_path / "cuau.extxyz", symbols=("Cu", "Au", "Cu", "Cu"))
    _picked(tmp_path / "cu.extxyz")
    slab = bulk("Si", "diamond", a=5.431, cubic=True)
    slab.pbc = [True, True, False]
    ase.io.write(tmp_path / "slab.extxyz", slab, format="extxyz")
    with open(tmp_path / "md.dump", "w") as fh:
        fh.write("ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n2\nITEM: BOX BOUNDS pp pp pp\n0 5\n0 5\n0 5\n"
                 "ITEM: ATOMS id type x y z\n1 1 0 0 0\n2 1 1.8 1.8 0\n")
    si_file = tmp_path / "si.xyz"
    assert main(["label", str(tmp_path / "slab.extxyz"), "--reference", "si-sw", "-o", str(si_file)]) == 1
    assert capsys.readouterr().err == (f"mdpot: error: {tmp_path / 'slab.extxyz'}: frame 0 is partly periodic (pbc "
                                       f"[True, True, False]); si-sw labels fully periodic or non-periodic "
                                       f"structures\n")
    slab.pbc = True
    ase.io.write(tmp_path / "bulk.extxyz", slab, format="extxyz")
    assert main(["label", str(tmp_path / "bulk.extxyz"), "--reference", "si-sw", "-o", str(si_file),
                 "--no-progress"]) == 0
    not_xyz = tmp_path / "notes.txt"
    not_xyz.write_text("not a structure\n")
    cases = [
        (["cuau.extxyz", "--reference", "cu-emt", "-o", "x.xyz"],
         "cuau.extxyz: frame 0 has Au, which cu-emt (EMT) does not label (elements: Cu); cuau-emt labels Cu and "
         "Au"),
        (["cu.extxyz", "--reference", "si-sw", "-o", "x.xyz"],
         "cu.extxyz: frame 0 has Cu, which si-sw (Stillinger-Weber) does not label (elements: Si)"),
        (["md.dump", "--reference", "cu-emt", "-o", "x.xyz"],
         "md.dump: frame 0 has H, which cu-emt (EMT) does not label (elements: Cu) (a LAMMPS dump? --elements names "
         "the element of each atom type)"),
        (["md.dump", "--elements", "Cu", "Au", "--reference", "si-sw", "-o", "x.xyz"],
         "md.dump: frame 0 has Cu, which si-sw (Stillinger-Weber) does not label (elements: Si)"),
        (["cu.extxyz", "--reference", "cu-emt", "-o", "si.xyz", "--append"],
         "cannot append to si.xyz: its frame 0 is labelled by si-sw (Stillinger-Weber); --reference cu-emt labels "
         "with EMT: one file, one reference potential"),
        (["cu.extxyz", "--reference", "cu-emt", "-o", "notes.txt", "--append"], "cannot append to notes.txt: cannot "
                                                                                  "read structures ("),
        (["missing.xyz", "--reference", "cu-emt", "-o", "x.xyz"], f"data file not found: {tmp_path / 'missing.xyz'}"),
        (["cu.extxyz", "--reference", "cu-emt", "-o", "."], ".: is a folder; -o names the extxyz file to write"),
    ]
    monkeypatch.chdir(tmp_path)
    for argv, message in cases:
        assert main(["label", *argv, "--no-progress"]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(f"mdpot: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "x.xyz").exists() and not_xyz.read_text() == "not a structure\n"
    for argv, message in ((["--kind", "two words"], "argument --kind: expected a name without spaces, got 'two words'"),
                          (["--format", "xyzz"], "argument --format: unknown ase.io format 'xyzz' (e.g. extxyz, "
                                                 "lammps-dump-text, traj)"),
                          (["--reference", "cu"], "argument --reference: invalid choice: 'cu' (choose from 'cu-emt', "
                                                  "'cuau-emt', 'si-sw')")):
        with pytest.raises(SystemExit) as exc:
            main(["label", str(tmp_path / "cu.extxyz"), "--reference", "cu-emt", "-o", str(tmp_path / "y.xyz"), *argv])
        assert exc.value.code == 2 and capsys.readouterr().err.strip().endswith(f"error: {message}")
