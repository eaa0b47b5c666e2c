"""Issue #14's messages: every user-facing message of the CLI and the loaders, with its exact text.

Files of other kinds (checkpoints, nequip files) given where a deployed model belongs, deploy never suggesting
``weights_only=False``, YAML 1.2 floats and located YAML errors, ``--version``, descriptions, one line without a
traceback, a closed pipe, no ASE warnings from ``mdpot check``, and the wrong-file-type cases found on the way.
"""
import collections
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from mdpot.cli import build_parser, main, version_line
from mdpot.deploy import SelfCheckError, deploy_checkpoint, load_model
from mdpot.models import create_checkpoint, load_checkpoint, make_config
from mdpot.testing import SMALL_OPTIONS

ROOT = Path(__file__).resolve().parents[1]


class GraphModel(torch.nn.Module):
    """A TorchScript archive whose root class carries nequip's name: what detection reads of a nequip model file.
    (Real nequip files are covered in test_nequip_interop.py; these messages need only the kind.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


GraphModel.__module__ = "nequip.nn.graph_model"


class Opaque:
    """Pickled into a file it makes the weights-only unpickler refuse it."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small mdpot checkpoint and its deployed model, nequip-kind files, and files of no model kind."""
    d = tmp_path_factory.mktemp("messages")
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL_OPTIONS["allegro"].items()}
    ckpt = create_checkpoint(make_config("allegro", dict(options, elements=["Cu"])), d / "cu.ckpt", seed=1)
    model = deploy_checkpoint(ckpt, d / "cu.pt").path
    f = {"ckpt": ckpt, "model": model, "dir": d / "folder"}
    f["dir"].mkdir()
    f["nequip_pth"] = d / "nq.nequip.pth"
    torch.jit.save(torch.jit.script(GraphModel()), str(f["nequip_pth"]))
    f["nequip_ckpt"] = d / "nq.ckpt"
    torch.save({"hyper_parameters": {"info_dict": {}}, "state_dict": {}, "cls": "nequip.train.EMALightningModule"},
               f["nequip_ckpt"])
    f["empty"] = d / "empty.pt"
    f["empty"].write_bytes(b"")
    f["text"] = d / "notes.pt"
    f["text"].write_text("not a model\n")
    f["pickle"] = d / "plain.pkl"
    f["pickle"].write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    f["zip"] = d / "random.zip"
    with zipfile.ZipFile(f["zip"], "w") as z:
        z.writestr("readme.txt", "hello")
    f["tsave"] = d / "weights.pt"
    torch.save({"w": torch.zeros(2)}, f["tsave"])
    f["opaque_ckpt"] = d / "opaque.ckpt"  # claims to be an mdpot checkpoint but holds a Python object
    torch.save({"mdpot_checkpoint": 1, "extra": Opaque()}, f["opaque_ckpt"])
    f["keyless_ckpt"] = d / "keyless.ckpt"
    torch.save({"mdpot_checkpoint": 1, "extra": collections.OrderedDict()}, f["keyless_ckpt"])
    return f


def _run(argv, capsys):
    """(exit code, stdout, stderr) of the CLI in-process; stderr is checked to be one line."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("\n") <= 1, err
    return code, out, err.strip()


# --------------------------------------------------------------------------------------------------------------
# 1. A checkpoint or a nequip file where a deployed model belongs


@pytest.mark.parametrize("kind, label", [("ckpt", "an mdpot training checkpoint, not a deployed model"),
                                         ("nequip_pth", "a nequip TorchScript model, not a deployed mdpot model"),
                                         ("nequip_ckpt", "a nequip training checkpoint, not a deployed mdpot model")])
def test_other_model_kinds_are_named(files, kind, label, capsys):
    from mdpot import MDPotCalculator

    path = files[kind]
    expected = f"{path}: is {label}; deploy it with `mdpot deploy {path} -o model.pt`"
    for command in ("info", "check"):
        assert _run([command, path], capsys) == (1, "", f"mdpot: error: {expected}")
    with pytest.raises(ValueError) as exc:
        MDPotCalculator(path)
    assert str(exc.value) == expected
    assert "corrupt" not in expected


def test_checkpoint_loader_names_other_kinds(files):
    model, nequip = files["model"], files["nequip_pth"]
    cases = {
        model: f"{model}: is a deployed mdpot model, not a training checkpoint; use the .ckpt it was deployed from "
               f"(`mdpot info {model}` shows its provenance)",
        nequip: f"{nequip}: is a nequip TorchScript model, not an mdpot checkpoint; deploy it with "
                f"`mdpot deploy {nequip} -o model.pt`",
        files["keyless_ckpt"]: f"{files['keyless_ckpt']}: mdpot checkpoint without ['architecture', 'config', "
                               f"'state_dict']; the file is damaged or was not written by mdpot",
        files["text"]: f"{files['text']}: not an mdpot checkpoint (not a zip archive written by torch.save; "
                       f"truncated or corrupt?)",
    }
    for path, expected in cases.items():
        with pytest.raises(ValueError) as exc:
            load_checkpoint(path)
        assert str(exc.value) == expected


def test_validate_tells_checkpoints_by_content(files, tmp_path, capsys):
    """A deployed model named .ckpt is evaluated as the model it is; a checkpoint named .pt as a checkpoint."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=0)
    atoms.calc = EMT()
    atoms.get_forces()
    data = tmp_path / "cu.xyz"
    write(data, atoms)
    model_as_ckpt, ckpt_as_pt = tmp_path / "model.ckpt", tmp_path / "weights.pt"
    model_as_ckpt.write_bytes(files["model"].read_bytes())
    ckpt_as_pt.write_bytes(files["ckpt"].read_bytes())
    tables = []
    for model in (files["model"], model_as_ckpt, ckpt_as_pt):
        code, out, err = _run(["validate", model, data], capsys)
        assert (code, err) == (0, "")
        assert out.startswith(f"model {model}\n")
        tables.append(out.split("\n", 1)[1])
    assert tables[0] == tables[1] == tables[2]  # float64 deploy and eager float64 checkpoint agree to the digits shown


# --------------------------------------------------------------------------------------------------------------
# 2. deploy never suggests weights_only=False


def test_deploy_refusals(files, tmp_path, capsys):
    f, out = files, tmp_path / "out.pt"
    not_zip = ("not a zip archive; expected an mdpot checkpoint or model, a nequip TorchScript model (.nequip.pth), "
               "a nequip checkpoint (.ckpt) or a nequip package (.nequip.zip)")
    cases = [
        ([f["model"]], f"{f['model']}: is already a deployed mdpot model (see `mdpot info {f['model']}`); deploy the "
                       f"checkpoint it came from to change its dtype or format"),
        ([f["model"], "--from", "mdpot"], f"{f['model']}: is already a deployed mdpot model (see `mdpot info "
                                          f"{f['model']}`); deploy the checkpoint it came from to change its dtype or format"),
        ([f["model"], "--from", "nequip"], f"{f['model']}: the content is an mdpot model, not a nequip file"),
        ([f["ckpt"], "--from", "nequip"], f"{f['ckpt']}: the content is an mdpot checkpoint, not a nequip file"),
        ([f["nequip_pth"], "--from", "mdpot"],
         f"{f['nequip_pth']}: the content is a nequip TorchScript model, not an mdpot file"),
        ([f["zip"]], f"{f['zip']}: a zip archive that is not a model file mdpot knows (no TorchScript code, "
                     f"torch.save pickle or torch.package data)"),
        ([f["tsave"]], f"{f['tsave']}: a torch.save archive that is neither an mdpot checkpoint (no mdpot_checkpoint "
                       f"payload) nor a nequip training checkpoint (no hyper_parameters/info_dict of nequip's "
                       f"training module)"),
        ([f["tsave"], "--from", "mdpot"], f"{f['tsave']}: a torch.save archive that is neither an mdpot checkpoint "
                                          f"(no mdpot_checkpoint payload) nor a nequip training checkpoint (no "
                                          f"hyper_parameters/info_dict of nequip's training module)"),
        ([f["opaque_ckpt"]], f"{f['opaque_ckpt']}: not an mdpot checkpoint (it holds Python objects other than "
                             f"tensors and plain data, which mdpot never unpickles)"),
        ([f["keyless_ckpt"]], f"{f['keyless_ckpt']}: mdpot checkpoint without ['architecture', 'config', "
                              f"'state_dict']; the file is damaged or was not written by mdpot"),
        ([f["dir"]], f"{f['dir']}: is a folder; expected a model file (an mdpot checkpoint or a nequip model)"),
    ]
    for family in ([], ["--from", "mdpot"], ["--from", "nequip"]):
        for name in ("pickle", "empty", "text"):
            cases.append(([f[name]] + family, f"{f[name]}: {not_zip}"))
    for args, expected in cases:
        code, _, err = _run(["deploy", *args, "-o", out], capsys)
        assert (code, err) == (1, f"mdpot: error: {expected}"), args
        assert "weights_only" not in err
    assert not out.exists()


def test_checkpoint_api_never_suggests_weights_only(files):
    """The Python path (deploy_checkpoint -> load_checkpoint) given a deployed model or a plain pickle."""
    for path in (files["model"], files["pickle"], files["opaque_ckpt"]):
        with pytest.raises(ValueError) as exc:
            deploy_checkpoint(path, path.with_suffix(".out.pt"))
        assert "weights_only" not in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------------------------------
# 3. YAML: 1.2 floats, located errors


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), (".5", 0.5), ("1.0e3", 1000.0),
                                         ("-2e+2", -200.0), ("1e3", 1000.0), ("0.005", 0.005), ("3", 3),
                                         ("'1e-3'", "1e-3"), ("1e-3x", "1e-3x")])
def test_yaml_floats(text, value):
    from mdpot._yaml import load_yaml

    parsed = load_yaml(f"lr: {text}")["lr"]
    assert parsed == value and type(parsed) is type(value)


def test_yaml_1_2_booleans_keep_element_names():
    """YAML 1.1 reads ``No`` (nobelium) and ``yes``/``off`` as booleans; only true/false are booleans here."""
    from mdpot._yaml import load_yaml

    assert load_yaml("elements: [No, yes, off, true, False]") == {"elements": ["No", "yes", "off", True, False]}


def test_train_config_reads_exponent_floats(tmp_path):
    from mdpot.train.config import load_train_config

    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: {elements: [Cu]}\ndata: {train: cu.xyz}\n"
                   "training: {lr: 1e-3, min_lr: 5E-7, weight_decay: .5e-2, loss_weights: {forces: 1e1}}\n")
    training = load_train_config(cfg).training
    assert (training.lr, training.min_lr, training.weight_decay, training.loss_weights["forces"]) == \
        (1e-3, 5e-7, 0.005, 10.0)


@pytest.mark.parametrize("text, where, problem", [
    ("architecture: allegro\nmodel: {elements: [Cu]\n", "3:1",
     "expected ',' or '}', but got '<stream end>' (while parsing a flow mapping started at line 2, column 8)"),
    ("model:\n  elements: [Cu]\n   r_max: 4.0\n", "3:4",
     "expected <block end>, but found '<block mapping start>' (while parsing a block mapping started at line 2, column 3)"),
    ("architecture: allegro\n  model: {}\n", "2:8", "mapping values are not allowed here"),
    ("model:\n\telements: [Cu]\n", "2:1", "found character '\\t' that cannot start any token (YAML indents with "
                                          "spaces, not tabs)"),
    ("model:\n  elements: [Cu]\n  elements: [Au]\n", "3:3",
     "key 'elements' appears twice in one mapping (first on line 2)"),
])
def test_malformed_yaml_is_located(tmp_path, capsys, text, where, problem):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    expected = f"mdpot: error: {cfg}:{where}: not valid YAML: {problem}"
    assert _run(["init", cfg, "-o", tmp_path / "x.ckpt"], capsys) == (1, "", expected)
    assert _run(["train", cfg, "-o", tmp_path / "run"], capsys) == (1, "", expected)
    assert not (tmp_path / "x.ckpt").exists() and not (tmp_path / "run").exists()


def test_config_messages(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cases = [
        ("", f"{cfg}: the file is empty; expected a mapping with 'architecture' and 'model' sections"),
        ("- Cu\n", f"{cfg}: expected a mapping with 'architecture' and 'model' sections, got a list"),
        ("model: {elements: Cu}\n", f"{cfg}: model: elements must be a non-empty list of chemical symbols, got 'Cu'"),
    ]
    for text, expected in cases:
        cfg.write_text(text)
        assert _run(["init", cfg, "-o", tmp_path / "x.ckpt"], capsys) == (1, "", f"mdpot: error: {expected}")
    assert _run(["init", tmp_path, "-o", tmp_path / "x.ckpt"], capsys) == \
        (1, "", f"mdpot: error: {tmp_path}: is a folder; expected a YAML config file with 'architecture' and 'model' "
                f"sections")
    binary = tmp_path / "model.pt"  # a model file given where the config belongs
    binary.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    assert _run(["train", binary], capsys) == \
        (1, "", f"mdpot: error: {binary}: not a text file (byte 132 is not UTF-8); expected a YAML config with "
                f"'architecture', 'model', 'data' and 'training' sections")
    cfg.write_text("model: {elements: [Cu]}\ndata: {train: cu.xyz}\ntraining: {lr: '1e-3'}\n")
    assert _run(["train", cfg, "-o", tmp_path / "run"], capsys) == \
        (1, "", "mdpot: error: training.lr must be a number, got '1e-3' (a quoted string; write the number without "
                "quotes)")


# --------------------------------------------------------------------------------------------------------------
# 4.-6. --version, descriptions, one line without a traceback, a closed pipe


def test_version(capsys):
    from importlib import metadata

    from mdpot import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out == version_line() + "\n"
    assert out == (f"mdpot {__version__} (torch {metadata.version('torch')}, e3nn {metadata.version('e3nn')}, "
                   f"ase {metadata.version('ase')}, Python {sys.version.split()[0]})\n")


def test_every_subcommand_has_a_description():
    sub = build_parser()._subparsers._group_actions[0]
    assert set(sub.choices) == {"init", "deploy", "info", "check", "doctor", "demo", "data", "train", "validate", "properties",
                                   "select", "label"}
    for name, p in sub.choices.items():
        assert p.description and len(p.description) > 40, name
        assert " ".join(p.description.split()) in " ".join(p.format_help().split()), name


def test_unexpected_errors_and_debug(files, monkeypatch, capsys):
    import mdpot.cli as cli

    def broken(args):
        raise KeyError("elements")

    monkeypatch.setattr(cli, "cmd_info", broken)
    assert _run(["info", files["model"]], capsys) == \
        (1, "", "mdpot: error: KeyError: 'elements' (unexpected; rerun with --debug for the traceback)")

    def self_check_fails(args):
        raise SelfCheckError("compiled model does not match the eager model: ...")

    monkeypatch.setattr(cli, "cmd_check", self_check_fails)  # mdpot's own exceptions are user-facing as they are
    assert _run(["check", files["model"]], capsys) == \
        (1, "", "mdpot: error: compiled model does not match the eager model: ...")
    for argv in (["--debug", "info", files["model"]], ["info", files["model"], "--debug"]):
        with pytest.raises(KeyError):
            main([str(a) for a in argv])


def test_more_wrong_inputs(files, tmp_path, capsys):
    """Folders, empty files, outputs that cannot be written, swapped arguments, a checkpoint of another model."""
    f = files
    other = create_checkpoint(make_config("nequip", {"elements": ["Cu", "Au"], "r_max": 3.5}), tmp_path / "o.ckpt")
    data = tmp_path / "cu.xyz"
    data.write_text("1\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc=\"F F F\"\nCu 0 0 0\n")
    cases = [
        (["info", f["dir"]], f"{f['dir']}: is a folder; expected a deployed model file (written by `mdpot deploy`)"),
        (["info", f["empty"]], f"{f['empty']}: the file is empty (0 bytes); expected a deployed model (written by "
                               f"`mdpot deploy`)"),
        (["deploy", f["ckpt"], "-o", f["dir"]], f"{f['dir']}: is a folder; -o names the file to write"),
        (["deploy", f["ckpt"], "-o", f["text"] / "m.pt"], f"cannot write {f['text'] / 'm.pt'}: {f['text']} is a "
                                                          f"file, not a folder"),
        (["init", "-o", "/proc/mdpot-test/x.ckpt"], "cannot write /proc/mdpot-test/x.ckpt: No such file or directory"),
        (["validate", data, f["model"]], f"{data}: not an mdpot model (neither a TorchScript archive nor an "
                                         f"AOTInductor package; truncated or corrupt?); MODEL comes first, then DATA: were they swapped?"),
        (["validate", f["model"], f["dir"]], f"{f['dir']}: is a folder; expected a file of labelled structures "
                                             f"(extxyz or another ase.io format)"),
        (["validate", f["model"], f["ckpt"]], f"{f['ckpt']}: cannot read structures (ase.io cannot tell the format "
                                              f"of this file; expected extxyz or another ase.io format)"),
        (["data", "cu-emt", "-o", f["text"]], f"{f['text']}: is a file; -o names the folder the three split files "
                                              f"go into"),
    ]
    for argv, expected in cases:
        assert _run(argv, capsys) == (1, "", f"mdpot: error: {expected}"), argv
    code, out, err = _run(["check", f["model"], "--checkpoint", other], capsys)
    assert (code, err) == (1, "mdpot: error: 1 of 5 checks failed: matches checkpoint")
    assert f"FAIL  matches checkpoint           {other} holds nequip for Cu Au, the deployed model is allegro for " \
           f"Cu: not the checkpoint it was deployed from\n" in out
    with pytest.raises(ValueError, match=r"^unknown device 'gpu'; expected 'cpu', 'cuda' or 'cuda:N'$"):
        load_model(f["model"], device="gpu")
    for argv, message in ((["demo", "--ranks", "0"], "argument --ranks: expected a positive integer, got '0'"),
                          (["demo", "--lammps-steps", "-1"], "argument --lammps-steps: expected an integer >= 0, got '-1'"),
                          (["data", "cu-emt", "-o", tmp_path, "-n", "0"], "argument -n/--n-structures: expected a "
                                                                          "positive integer, got '0'")):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2 and capsys.readouterr().err.strip().endswith(f"error: {message}")


#: One thread in the subprocesses, as in-process tests (conftest): two OpenMP threads on a busy 2-core machine
#: made `mdpot check` 20x slower.
ENV = dict(os.environ, OMP_NUM_THREADS=os.environ.get("MDPOT_TEST_THREADS", "1"))


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "mdpot.cli", *map(str, args)], cwd=ROOT, text=True, env=ENV,
                            stderr=subprocess.PIPE, **kwargs)


def test_closed_pipe_is_quiet(files):
    """`mdpot info m.pt | head -1`: the reader is gone before mdpot writes (torch takes a second to import)."""
    proc = _cli("info", files["model"], stdout=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (0, "")


def test_check_prints_no_warnings(files):
    """ASE's FutureWarning came from the calculator's deprecated finite-difference method; the test kit uses
    ase.calculators.fd instead. FutureWarnings are shown by default, and here always."""
    proc = subprocess.run([sys.executable, "-W", "always::FutureWarning", "-m", "mdpot.cli", "check", str(files["model"])],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.count("PASS") == 4
