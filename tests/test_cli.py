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
                                                              "data", "train", "validate"))):
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
            expected = (f"{path}: model format version 99 is not supported (this mdpot reads versions 1, 2, 4, 5, 7 of "
                        f"TorchScript files and 3, 6 of AOTInductor packages)")
        elif case == "version3":
            extra[md.FORMAT_VERSION_KEY] = "3"
            expected = (f"{path}: a TorchScript file claiming model format version 3 (TorchScript files are "
                        f"versions 1, 2, 4, 5, 7); deploy it again")
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
