"""Models trained with the nequip package (NequIP, Allegro) deployed through mdpot .

Needs ``nequip==0.19.1`` and ``nequip-allegro==0.8.3`` importable to build the source models; the wrapped
files themselves are plain TorchScript (checked in a subprocess where importing nequip fails).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

nequip = pytest.importorskip("nequip", reason="nequip (pip install nequip==0.19.1 nequip-allegro==0.8.3) is not importable")
pytest.importorskip("allegro", reason="nequip-allegro is not importable")

from mdpot.data import TypeMapper, atoms_to_graph  # noqa: E402
from mdpot.interop import nequip as nq  # noqa: E402
from mdpot.testing.nequip import (  # noqa: E402
    ELEMENTS, R_MAX, build_nequip_file, export_torchscript, package_checkpoint, train_checkpoint)
from mdpot.testing import alloy, molecule, slab  # noqa: E402

ARCHS = ("allegro", "nequip")
DTYPES = ("float64", "float32")
CASES = list(itertools.product(ARCHS, DTYPES))
TOL = {"float64": 1e-10, "float32": 5e-5}  # relative (atol = rtol), issue text
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _default_dtype():
    """nequip's ASE calculator builds pos/cell in torch's default dtype, which nequip sets to float64 once per
    process; pin float64 while a test runs (and restore the suite's default after) so it never runs on float32
    positions."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def sources(nequip_sources):
    return nequip_sources


@pytest.fixture(scope="session")
def wrapped(nequip_wrapped):
    return nequip_wrapped


def close(a, b, tol, what):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    err = np.abs(a - b)
    assert np.all(err <= tol * (1 + np.abs(b))), f"{what}: max |error| {err.max():.3e} (tol {tol:.0e}, |max| {np.abs(b).max():.3e})"


def structures():
    return {
        "small_periodic": alloy(ELEMENTS, (2, 2, 2), a=0.75 * R_MAX, skew=0.15, rattle=0.1, seed=3),  # 6 Å < 2 r_max
        "slab": slab(ELEMENTS, (2, 2, 2), a=3.0, seed=4),
        "molecule": molecule(ELEMENTS, n_atoms=10, spacing=2.3, seed=5),
    }


# ---------------------------------------------------------------------------------------------------------------
# Facts about nequip's models (the basis of the wrapper)


@pytest.mark.parametrize("arch,dtype", CASES)
def test_energy_model_takes_edge_vectors(sources, arch, dtype):
    """GraphModel.model.func accepts float64 edge_vectors and returns float64 atomic energies; our autograd over
    the vectors reproduces nequip's own forces and stress; the full GraphModel given edge_vectors returns only
    edge_forces (no forces, no stress)."""
    model, raw = nq.load_nequip_torchscript(sources[arch, dtype])
    atoms = structures()["small_periodic"]
    ref = nq.nequip_dict_eval(model, atoms, R_MAX, ELEMENTS)
    g = atoms_to_graph(atoms, R_MAX, TypeMapper(ELEMENTS))
    vec = (g.pos[g.edge_index[1]] - g.pos[g.edge_index[0]] + g.edge_shift).requires_grad_(True)
    out = model.model.func({"pos": g.pos, "atom_types": g.atom_type, "edge_index": g.edge_index, "edge_vectors": vec})
    assert out["atomic_energy"].dtype == torch.float64
    grad, = torch.autograd.grad(out["atomic_energy"].sum(), [vec])
    forces = torch.zeros_like(g.pos).index_add(0, g.edge_index[0], grad).index_add(0, g.edge_index[1], -grad)
    close(forces.numpy(), ref["forces"], 1e-12, "forces from dE/dr_ij")
    full = model({"pos": g.pos, "atom_types": g.atom_type, "edge_index": g.edge_index, "edge_vectors": vec.detach()})
    assert "edge_forces" in full and "forces" not in full and "stress" not in full


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_count_from_structure(sources, arch):
    model, raw = nq.load_nequip_torchscript(sources[arch, "float64"])
    assert nq.architecture_of(model, "x") == (arch, 2)
    assert set(raw) >= {"r_max", "type_names", "model_dtype", "num_types", "allow_tf32"}


# ---------------------------------------------------------------------------------------------------------------
# The wrapped model against nequip's ASE calculator


@pytest.mark.parametrize("name", list(structures()))
@pytest.mark.parametrize("arch,dtype", CASES)
def test_wrapped_matches_nequip_calculator(sources, wrapped, arch, dtype, name):
    from ase.calculators.calculator import all_changes
    from nequip.integrations.ase import NequIPCalculator

    from mdpot import MDPotCalculator

    atoms = structures()[name]
    theirs = NequIPCalculator.from_compiled_model(str(sources[arch, dtype]), device="cpu",
                                                  chemical_species_to_atom_type_map=True)
    ours = MDPotCalculator(wrapped[arch, dtype])
    props = ["energy", "energies", "forces"] + (["stress", "stresses"] if atoms.cell.rank == 3 else [])
    theirs.calculate(atoms.copy(), [p for p in props if p != "stresses"], all_changes)
    ours.calculate(atoms.copy(), props, all_changes)
    tol = TOL[dtype]
    for key in props:
        if key == "stresses":
            close(ours.results["stresses"].sum(axis=0), ours.results["stress"], 1e-12, "sum of per-atom stresses")
            continue
        close(ours.results[key], theirs.results[key], tol, f"{arch} {dtype} {name} {key}")
    assert np.abs(theirs.results["forces"]).max() > 1e-2, "vacuous: forces ~0"


def ghost_graph(atoms, r_max: float, layers: int):
    """LAMMPS-like inputs for a periodic cell: the cell's atoms are local, periodic images within the receptive
    field are ghost atoms, shifts are zero, and only the edges the contract requires (centre at most
    ``layers - 1`` hops from a local atom) are given. Returns the inputs and each atom's original index."""
    from ase import Atoms

    rf = layers * r_max
    cell, n = atoms.cell.array, len(atoms)
    heights = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    reps = [int(np.ceil(rf / heights[k])) + 1 if atoms.pbc[k] else 0 for k in range(3)]
    pos, origin = [atoms.positions], [np.arange(n)]
    for s in itertools.product(*[range(-r, r + 1) for r in reps]):
        if s == (0, 0, 0):
            continue
        p = atoms.positions + np.asarray(s) @ cell
        d = np.linalg.norm(p[:, None, :] - atoms.positions[None, :, :], axis=-1).min(axis=1)
        keep = d < rf + 1e-9
        pos.append(p[keep])
        origin.append(np.arange(n)[keep])
    pos, origin = np.concatenate(pos), np.concatenate(origin)
    big = Atoms(np.asarray(atoms.get_chemical_symbols())[origin].tolist(), positions=pos, pbc=False)
    g = atoms_to_graph(big, r_max, TypeMapper(ELEMENTS))
    mask = torch.from_numpy(nq.minimal_edges(g.edge_index.numpy(), g.num_atoms, n, layers))
    return (g.pos, g.atom_type, g.edge_index[:, mask], g.edge_shift[mask], n), origin


@pytest.mark.parametrize("arch", ARCHS)
def test_ghost_atoms_and_local_energies_are_exact(wrapped, arch):
    """Feeding local + ghost atoms with the contract's minimal edge list and summing only the first n_local
    atomic energies gives the periodic cell's energy, per-atom energies, folded forces, virial and folded
    per-atom virial (NequIP: message passing through ghosts)."""
    from mdpot.deploy import load_model

    model = load_model(wrapped[arch, "float64"])
    layers = model.metadata["num_layers"] if arch == "nequip" else 1
    atoms = structures()["small_periodic"]
    g = atoms_to_graph(atoms, R_MAX, TypeMapper(ELEMENTS))
    e0, f0, w0, aw0 = model(g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, True)
    (pos, typ, ei, es, n), origin = ghost_graph(atoms, R_MAX, layers)
    assert len(origin) > 3 * n
    e1, f1, w1, aw1 = model(pos, typ, ei, es, n, True)
    fold = lambda x: torch.zeros((n,) + x.shape[1:], dtype=x.dtype).index_add(0, torch.from_numpy(origin), x)  # noqa: E731
    close(e1.numpy(), e0.numpy(), 1e-11, "local energies")
    close(fold(f1).numpy(), f0.numpy(), 1e-11, "folded forces")
    close(w1.numpy(), w0.numpy(), 1e-11, "virial")
    close(fold(aw1).numpy(), aw0.numpy(), 1e-11, "folded per-atom virial")
    close(aw0.sum(0).numpy(), w0.numpy(), 1e-12, "sum of per-atom virial")


def test_convention_probe_refuses(wrapped):
    """The probe fails for a model whose centre is edge_index[1] and for an underestimated layer count."""
    from mdpot.deploy import load_model

    class Flipped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pos, atom_type, edge_index, edge_shift, n_local: int, compute_atom_virial: bool):
            e, f, w, aw = self.inner(pos, atom_type, edge_index.flip(0), -edge_shift, n_local, compute_atom_virial)
            return e, f, w, aw

    allegro = load_model(wrapped["allegro", "float64"]).module
    assert nq.check_convention(allegro, ELEMENTS, R_MAX, 1, "float64", "x") < 1e-12
    with pytest.raises(ValueError, match="edge convention not confirmed"):
        nq.check_convention(Flipped(allegro), ELEMENTS, R_MAX, 1, "float64", "x")
    nequip_model = load_model(wrapped["nequip", "float64"]).module
    nq.check_convention(nequip_model, ELEMENTS, R_MAX, 2, "float64", "x")
    with pytest.raises(ValueError, match="edge convention not confirmed"):
        nq.check_convention(nequip_model, ELEMENTS, R_MAX, 1, "float64", "x")


# ---------------------------------------------------------------------------------------------------------------
# Metadata, detection, bad inputs


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata(sources, wrapped, arch):
    from mdpot.deploy import load_model, weights_digest

    m = load_model(wrapped[arch, "float32"])
    meta = m.metadata
    assert meta["architecture"] == arch and meta["elements"] == ELEMENTS and meta["r_max"] == R_MAX
    assert meta["num_layers"] == 2 and meta["model_dtype"] == "float32"
    assert meta["receptive_field"] == (R_MAX if arch == "allegro" else 2 * R_MAX)
    src = meta["provenance"]["source"]
    assert src["kind"] == "nequip-torchscript" and src["file"] == sources[arch, "float32"].name
    assert src["sha256"] == hashlib.sha256(sources[arch, "float32"].read_bytes()).hexdigest() and src["metadata"]["type_names"] == "Cu Au"
    assert meta["config"]["nequip_metadata"]["r_max"] == "4.0"
    assert weights_digest(m.module) == meta["weights_sha256"]


def test_detect_source_kind(sources, wrapped, tmp_path):
    assert nq.detect_source_kind(sources["allegro", "float64"]) == nq.NEQUIP_TORCHSCRIPT
    renamed = tmp_path / "model.bin"  # content, not name
    renamed.write_bytes(sources["allegro", "float64"].read_bytes())
    assert nq.detect_source_kind(renamed) == nq.NEQUIP_TORCHSCRIPT
    assert nq.detect_source_kind(wrapped["allegro", "float64"]) == nq.MDPOT
    text = tmp_path / "x.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        nq.detect_source_kind(text)
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(other))
    with pytest.raises(ValueError, match="neither an mdpot model .* nor a nequip model"):
        nq.detect_source_kind(other)
    saved = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, str(saved))
    with pytest.raises(ValueError, match="neither an mdpot checkpoint .* nor a nequip training checkpoint"):
        nq.detect_source_kind(saved)
    with pytest.raises(FileNotFoundError):
        nq.detect_source_kind(tmp_path / "missing.pth")


def _rewrite_extra(src: Path, dst: Path, key: str, value):
    """Copy a TorchScript zip with extra/KEY replaced by ``value`` (None: removed)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            parts = item.filename.split("/")
            if len(parts) == 3 and parts[1] == "extra" and parts[2] == key:
                if value is not None:
                    zout.writestr(item, value)
                continue
            zout.writestr(item, zin.read(item.filename))


@pytest.mark.parametrize("key,value,match", [
    ("r_max", None, r"lacks metadata \['r_max'\]"),
    ("type_names", None, r"lacks metadata \['type_names'\]"),
    ("type_names", "Cu Xy", "type name 'Xy' is not a chemical element symbol"),
    ("type_names", "Cu Cu", "repeat an element"),
    ("model_dtype", "float16", "model_dtype 'float16' is not one of"),
    ("r_max", "abc", "r_max must be a number"),
    ("allow_tf32", "1", "allow_tf32"),
])
def test_deploy_refuses_bad_metadata(sources, tmp_path, key, value, match):
    bad = tmp_path / "bad.nequip.pth"
    _rewrite_extra(sources["allegro", "float64"], bad, key, value)
    out = tmp_path / "out.pt"
    with pytest.raises(ValueError, match=match) as info:
        nq.deploy_nequip(bad, out)
    assert "\n" not in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".out.pt*"))


def test_deploy_refuses_other_inputs(sources, wrapped, tmp_path):
    src = sources["nequip", "float64"]
    with pytest.raises(ValueError, match="requested dtype float32 but the nequip model is float64"):
        nq.deploy_nequip(src, tmp_path / "a.pt", dtype="float32")
    with pytest.raises(ValueError, match="is an mdpot model, not a nequip model"):
        nq.deploy_nequip(wrapped["nequip", "float64"], tmp_path / "b.pt")
    existing = tmp_path / "c.pt"
    existing.write_text("keep")
    with pytest.raises(FileExistsError):
        nq.deploy_nequip(src, existing)
    assert existing.read_text() == "keep"
    assert not list(tmp_path.glob("*.tmp"))


def test_self_check_disagreement_writes_nothing(sources, tmp_path, monkeypatch):
    real = nq.nequip_dict_eval

    def perturbed(*args, **kwargs):
        res = real(*args, **kwargs)
        res["forces"] = res["forces"] * (1 + 1e-6)
        return res

    monkeypatch.setattr(nq, "nequip_dict_eval", perturbed)
    out = tmp_path / "out.pt"
    with pytest.raises(ValueError, match="disagrees with the nequip model on the periodic cell: forces max"):
        nq.deploy_nequip(sources["allegro", "float64"], out)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """arch -> (best.ckpt, .nequip.zip, .nequip.pth) of a tiny model nequip-trained for two epochs."""
    out = {}
    for arch in ARCHS:
        folder = tmp_path_factory.mktemp(f"nequip_train_{arch}")
        ckpt = train_checkpoint(folder, arch)
        out[arch] = (ckpt, package_checkpoint(ckpt, folder / "model.nequip.zip"),
                     export_torchscript(ckpt, folder / "model.nequip.pth"))
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_deploy_from_checkpoint_and_package_equals_torchscript(trained, tmp_path, arch):
    """Kinds are detected from content; deploying the checkpoint, its package and its .nequip.pth gives the same
    weights and bitwise the same results; the checkpoint deploy also passed the check against the eager model."""
    from mdpot.deploy import load_model

    files = dict(zip((nq.NEQUIP_CHECKPOINT, nq.NEQUIP_PACKAGE, nq.NEQUIP_TORCHSCRIPT), trained[arch]))
    atoms = structures()["small_periodic"]
    results, digests = {}, set()
    for kind, src in files.items():
        renamed = tmp_path / f"source_{kind}.bin"  # the name says nothing
        renamed.write_bytes(src.read_bytes())
        assert nq.detect_source_kind(renamed) == kind
        m = nq.deploy_nequip(renamed, tmp_path / f"{kind}.pt")
        assert m.metadata["provenance"]["source"]["kind"] == kind
        assert m.metadata["architecture"] == arch and m.metadata["num_layers"] == (1 if arch == "allegro" else 2)
        digests.add(m.metadata["weights_sha256"])
        results[kind] = nq.contract_eval(load_model(m.path).module, atoms, R_MAX, ELEMENTS)
    assert len(digests) == 1
    for kind, res in results.items():
        for key, value in res.items():
            assert np.array_equal(value, results[nq.NEQUIP_TORCHSCRIPT][key]), f"{kind} {key}"


NO_NEQUIP = """
import sys
sys.modules["nequip"] = None; sys.modules["allegro"] = None
from mdpot import MDPotCalculator
from mdpot.interop.nequip import deploy_nequip
from mdpot.testing import alloy
loaded = deploy_nequip(sys.argv[1], sys.argv[2])
atoms = alloy(("Cu", "Au"), (2, 2, 2), a=3.0, seed=3)
atoms.calc = MDPotCalculator(sys.argv[2])
print("energy", atoms.get_potential_energy())
try:
    deploy_nequip(sys.argv[3], sys.argv[2] + ".ckpt.pt")
except ValueError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize("kind", [0, 1], ids=["checkpoint", "package"])
def test_deploy_and_run_without_nequip(sources, trained, tmp_path, kind):
    """The .nequip.pth deploys and the wrapped file runs in a Python where nequip and allegro cannot be imported;
    a checkpoint or package there is refused in one line saying what to install."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", NO_NEQUIP, str(sources["nequip", "float32"]),
                           str(tmp_path / "w.pt"), str(trained["allegro"][kind])], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "energy" in proc.stdout
    line = proc.stdout.split("refused:")[1].strip()
    assert "\n" not in line and "pip install" in line and "nequip-allegro" in line, line


def test_cli_deploy_detects_the_source_kind(sources, wrapped, tmp_path, capsys):
    """`mdpot deploy` reads the kind from the content: a nequip TorchScript file, an mdpot checkpoint (same
    command), a deployed mdpot model (refused), and `--from` naming the wrong family (refused, one line)."""
    from mdpot.cli import main
    from mdpot.models import create_checkpoint, make_config

    out = tmp_path / "wrapped.pt"
    src = tmp_path / "model.bin"  # no telling name: detection reads the content
    src.write_bytes(sources["allegro", "float32"].read_bytes())
    assert main(["deploy", str(src), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "allegro float32 TorchScript from nequip-torchscript model.bin" in text and "self-check passed" in text
    assert main(["info", str(out)]) == 0
    assert "origin" in capsys.readouterr().out
    assert main(["check", str(out)]) == 0  # digest, finite-difference forces, equivariance, momentum
    assert "FAIL" not in capsys.readouterr().out
    assert main(["info", str(src)]) == 1  # the source itself is named for what it is, with the command to deploy it
    assert capsys.readouterr().err.strip() == (f"mdpot: error: {src}: is a nequip TorchScript model, not a deployed "
                                               f"mdpot model; deploy it with `mdpot deploy {src} -o model.pt`")

    ckpt = create_checkpoint(make_config("allegro", {"elements": ["Cu"], "r_max": 4.0}), tmp_path / "fresh.ckpt")
    assert main(["deploy", str(ckpt), "-o", str(tmp_path / "fresh.pt"), "--dtype", "float32"]) == 0
    assert "from mdpot checkpoint" in capsys.readouterr().out

    cases = [
        (["deploy", str(wrapped["nequip", "float64"]), "-o", str(tmp_path / "x.pt")], "is already a deployed mdpot model"),
        (["deploy", str(src), "-o", str(tmp_path / "y.pt"), "--from", "mdpot"],
         "the content is a nequip TorchScript model, not an mdpot file"),
        (["deploy", str(ckpt), "-o", str(tmp_path / "z.pt"), "--from", "nequip"],
         "the content is an mdpot checkpoint, not a nequip file"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists() and not (tmp_path / "z.pt").exists()
