"""The README's snippets are true: its configs are the files it names, its Python runs, and every command,
script and file it mentions exists."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str):
    """Fenced code blocks of one language, with their leading indentation removed."""
    found = []
    for m in re.finditer(rf"^( *)```{lang}\n(.*?)^\1```", README, flags=re.S | re.M):
        indent = len(m.group(1))
        found.append("".join(line[indent:] + "\n" for line in m.group(2).splitlines()))
    return found


def _block_after(marker: str, lang: str) -> str:
    at = README.index(marker)
    for m in re.finditer(rf"^( *)```{lang}\n", README, flags=re.M):
        if m.start() > at:
            return next(b for b in _blocks(lang) if README.find(b.splitlines()[0], m.start()) >= 0)
    raise AssertionError(f"no {lang} block after {marker!r}")


def test_minimal_config_is_the_example_file():
    shown = _block_after("A minimal config is a few lines", "yaml")
    body = "".join(line + "\n" for line in (ROOT / "examples/train_minimal.yaml").read_text().splitlines()
                   if not line.startswith("#"))
    assert shown == body


def test_model_yaml_is_a_valid_config():
    from mdpot.models import make_config

    data = yaml.safe_load(_block_after("A model config (`model.yaml`", "yaml"))
    config = make_config(data["architecture"], data["model"])
    assert config.elements == ("Cu", "Au")


def test_ase_snippet_runs(monkeypatch):
    code = _block_after("### ASE", "python")
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    atoms = scope["atoms"]
    assert len(atoms) == 108
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_stresses().shape == (108, 6)


def test_mdpot_subcommands_exist():
    from mdpot.cli import build_parser

    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    used = set(re.findall(r"^\s*mdpot ([a-z][a-z-]*)", "".join(_blocks("bash")), flags=re.M))
    assert used, "the README shows no mdpot command"
    assert used <= set(choices), f"README uses unknown subcommands: {sorted(used - set(choices))}"


def _expand(path: str):
    """``a.{json,md}`` -> ``a.json``, ``a.md``."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in _expand(path[:m.start()] + alt + path[m.end():])]


@pytest.mark.parametrize("kind", ["scripts", "examples", "docs", "tests"])
def test_named_files_exist(kind):
    named = set(re.findall(rf"`((?:\.venv/bin/python )?{kind}/[\w./{{}},-]+)", README))
    paths = {p for n in named for p in _expand(n.split()[-1])}
    paths = {p for p in paths if not p.endswith("/") and "NAME" not in p}
    assert paths, f"the README names no file under {kind}/"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names missing files: {missing}"
