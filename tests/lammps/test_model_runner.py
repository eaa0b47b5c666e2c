"""The C++ model runner (mdpot/lammps/src/mdpot_model.cpp) without LAMMPS, through the mdpot_model_check tool built
beside the plugin: it gives the Python model's numbers on the same packed graph, and it accepts and refuses exactly
the files the Python loader (mdpot.deploy.load_model) accepts and refuses."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mdpot.contract import ALL_KEYS

# dtype: (rtol, atol) of C++ against Python on the same graph
TOLERANCE = {"float64": (1e-12, 1e-12), "float32": (5e-5, 5e-5)}


@pytest.fixture(scope="session")
def check_tool(plugin) -> Path:
    from mdpot.lammps.plugin import CHECK_NAME

    return Path(plugin).with_name(CHECK_NAME)


def run_tool(tool: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)


def packed_graph(elements, r_max: float):
    """A rattled alloy cluster as the contract's packed inputs, without periodic images and with zero shifts,
    as the pair style sends it; the last atoms stand for ghosts."""
    from ase.build import bulk

    atoms = bulk(elements[0], "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    atoms.symbols[[1, 6, 11]] = elements[-1]
    atoms.rattle(0.05, seed=3)
    pos = atoms.positions.astype(np.float64)
    types = np.array([elements.index(s) for s in atoms.get_chemical_symbols()], dtype=np.int64)
    d = np.linalg.norm(pos[None, :, :] - pos[:, None, :], axis=-1)
    i, j = np.nonzero((d < r_max) & (d > 0))
    n_local = len(pos) - 5  # the last atoms play ghosts: their energies are not returned
    return pos, types, np.stack([i, j]).astype(np.int64), n_local


def write_input(path: Path, pos, types, edges, n_local: int, want_atom_virial: bool) -> None:
    header = np.array([len(pos), edges.shape[1], n_local, int(want_atom_virial)], dtype=np.int64)
    with open(path, "wb") as f:
        for array in (header, pos.astype(np.float64), types.astype(np.int64), edges.astype(np.int64)):
            f.write(np.ascontiguousarray(array).tobytes())


def read_output(path: Path, n: int, n_local: int, want_atom_virial: bool):
    data = np.fromfile(path, dtype=np.float64)
    sizes = [n_local, 3 * n, 9, 9 * n if want_atom_virial else 0]
    assert len(data) == sum(sizes)
    parts = np.split(data, np.cumsum(sizes)[:-1])
    return parts[0], parts[1].reshape(n, 3), parts[2].reshape(3, 3), parts[3].reshape(-1, 3, 3)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("want_atom_virial", [True, False])
def test_runner_matches_python(check_tool, models, tmp_path, dtype, want_atom_virial):
    from mdpot.deploy import load_model

    loaded = load_model(models[dtype])
    pos, types, edges, n_local = packed_graph(list(loaded.elements), loaded.r_max)
    write_input(tmp_path / "in.bin", pos, types, edges, n_local, want_atom_virial)
    run = run_tool(check_tool, "run", models[dtype], tmp_path / "in.bin", tmp_path / "out.bin")
    assert run.returncode == 0, run.stdout
    got = read_output(tmp_path / "out.bin", len(pos), n_local, want_atom_virial)
    want = loaded(torch.tensor(pos), torch.tensor(types), torch.tensor(edges), torch.zeros(edges.shape[1], 3,
                  dtype=torch.float64), n_local, want_atom_virial)
    rtol, atol = TOLERANCE[dtype]
    for name, a, b in zip(("atom_energy", "forces", "virial", "atom_virial"), got, want):
        if name == "atom_virial" and not want_atom_virial:
            continue
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=rtol, atol=atol, err_msg=f"{dtype} {name}")


def test_runner_without_atoms(check_tool, models, tmp_path):
    write_input(tmp_path / "in.bin", np.zeros((0, 3)), np.zeros(0), np.zeros((2, 0)), 0, True)
    run = run_tool(check_tool, "run", models["float64"], tmp_path / "in.bin", tmp_path / "out.bin")
    assert run.returncode == 0, run.stdout
    e, f, w, aw = read_output(tmp_path / "out.bin", 0, 0, True)
    assert e.size == 0 and f.size == 0 and aw.size == 0 and not w.any()


def test_sha256_of_the_runner(check_tool, tmp_path):
    """The runner's own SHA-256 against hashlib, across the padding boundaries of one and two blocks."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 100_003):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        (tmp_path / "f").write_bytes(data)
        run = run_tool(check_tool, "sha256", tmp_path / "f")
        assert run.stdout.strip() == hashlib.sha256(data).hexdigest(), n


def crafted(models, folder: Path) -> dict:
    """Files that differ from the good one in one respect each, written as `torch.jit.save` writes them."""
    good = models["float64"]
    extra = {k: "" for k in ALL_KEYS}
    module = torch.jit.load(str(good), _extra_files=extra)
    meta = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
    changes = {
        "valid": {},
        "missing_key": {"config": None},
        "empty_key": {"elements": ""},
        "version_1": {"mdpot_format_version": "1"},  # files of the previous format keep loading
        "bad_version": {"mdpot_format_version": "3"},
        "version_not_integer": {"mdpot_format_version": "1.0"},
        "version_leading_zeros": {"mdpot_format_version": "0001"},
        "unknown_architecture": {"architecture": "mace"},
        "units_A": {"length_units": "A"},
        "units_meV": {"energy_units": "meV"},
        "bad_dtype": {"model_dtype": "float16"},
        "negative_r_max": {"r_max": "-5.0"},
        "nan_r_max": {"r_max": "nan"},
        "inf_receptive_field": {"receptive_field": "inf"},
        "r_max_with_space": {"r_max": " 5.0"},
        "receptive_field_below_r_max": {"receptive_field": "0.5"},
        "num_layers_not_integer": {"num_layers": "2.5"},
        "num_layers_zero": {"num_layers": "0"},
        "num_layers_huge": {"num_layers": "99999999999"},
        "blank_elements": {"elements": "   "},
        "duplicate_elements": {"elements": "Cu Cu"},
        "bad_json": {"config": "{'r_max': 5}"},
        "json_nan": {"provenance": '{"x": NaN}'},
        "json_trailing": {"provenance": '{"x": 1} x'},
        "json_scalar": {"provenance": "  3.5e2 "},
        "json_escape": {"provenance": '{"a\\u00e9\\n": [true, false, null, -0.5E+3]}'},
        "bad_digest": {"weights_sha256": "0" * 64},
        "bytes_per_edge": {"bytes_per_edge": "5120.5"},  # optional: "valid" has none
        "bytes_per_edge_zero": {"bytes_per_edge": "0"},
        "bytes_per_edge_inf": {"bytes_per_edge": "1e999"},
        "bytes_per_edge_text": {"bytes_per_edge": "5 kB"},
    }
    files = {}
    for name, change in changes.items():
        m = dict(meta)
        for key, value in change.items():
            if value is None:
                m.pop(key)
            else:
                m[key] = value
        files[name] = folder / f"{name}.pt"
        torch.jit.save(module, str(files[name]), _extra_files=m)
    edited = torch.jit.load(str(good))
    with torch.no_grad():
        next(edited.parameters()).mul_(1.001)
    files["edited_weights"] = folder / "edited_weights.pt"
    torch.jit.save(edited, str(files["edited_weights"]), _extra_files=meta)
    files["float32"] = models["float32"]
    return files


def verdicts_of(check_tool, files):
    """``{name: (python verdict, C++ verdict)}`` of every file of ``files`` (``{name: path}``), each ``"OK"`` or the
    refusal; asserts that the two loaders accept exactly the same files."""
    from mdpot.deploy import load_model

    run = run_tool(check_tool, "check-each", *files.values())
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0 and len(lines) == len(files), run.stdout
    verdicts = {}
    for (name, path), line in zip(files.items(), lines):
        try:
            load_model(path)
            python = "OK"
        except ValueError as exc:
            python = f"refused: {exc}"
        assert line.startswith(("OK ", "REFUSED: ")), line
        verdicts[name] = (python, "OK" if line.startswith("OK ") else line)
    differing = {k: v for k, v in verdicts.items() if (v[0] == "OK") != (v[1] == "OK")}
    assert not differing, differing
    return verdicts


def test_cpp_and_python_accept_the_same_files(check_tool, models, reference_model, tmp_path):
    files = crafted({"float64": reference_model, "float32": models["float32"]}, tmp_path)
    verdicts = verdicts_of(check_tool, files)
    accepted = sorted(k for k, v in verdicts.items() if v[0] == "OK")
    assert accepted == ["bytes_per_edge", "float32", "json_escape", "json_scalar", "valid", "version_1",
                        "version_leading_zeros"], verdicts
    assert "weights do not match the digest recorded at deploy" in verdicts["edited_weights"][1]


def test_metadata_is_checked_before_the_code_is_read(check_tool, reference_model, tmp_path):
    """Both loaders check every metadata record from the archive before torch reads the code: a file whose code is
    garbage is refused for its bad metadata (without the code being read), and with good metadata for its code."""
    import zipfile

    from mdpot.deploy import load_model

    with zipfile.ZipFile(reference_model) as z:
        records = {name.split("/", 1)[1]: z.read(name) for name in z.namelist()}
    code = [name for name in records if name.startswith("code/")]
    assert code and "extra/model_dtype" in records
    records.update({name: b"def forward(self) -> (\n" for name in code})
    bad_metadata = write_package(dict(records, **{"extra/model_dtype": b"float16"}), tmp_path / "bad_metadata.pt")
    bad_code = write_package(records, tmp_path / "bad_code.pt")
    with pytest.raises(ValueError, match=r"bad_metadata.pt: model_dtype 'float16' is not one of \['float32', "):
        load_model(bad_metadata)
    with pytest.raises(ValueError, match=r"bad_code.pt: not a loadable mdpot model \("):
        load_model(bad_code)
    lines = run_tool(check_tool, "check-each", bad_metadata, bad_code).stdout.strip().splitlines()
    assert lines[0] == f"REFUSED: '{bad_metadata}': model_dtype 'float16' is not one of 'float32', 'float64'", lines
    assert lines[1].startswith(f"REFUSED: cannot read '{bad_code}' as a TorchScript model"), lines


# -- AOTInductor packages: the runner's second backend ---------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_runner_runs_packages_like_python(check_tool, aoti_models, arch, tmp_path, dtype):
    """The C++ runner on a package gives the Python loader's numbers on the same packed graph (the same compiled
    program: to rounding), with and without the per-atom virial; no atoms at all is handled before the program."""
    from mdpot.deploy import load_model

    path = aoti_models[arch, dtype]
    loaded = load_model(path)
    assert loaded.format == "aoti"
    pos, types, edges, n_local = packed_graph(list(loaded.elements), loaded.r_max)
    for want_atom_virial in (True, False):
        write_input(tmp_path / "in.bin", pos, types, edges, n_local, want_atom_virial)
        run = run_tool(check_tool, "run", path, tmp_path / "in.bin", tmp_path / "out.bin")
        assert run.returncode == 0, run.stdout
        got = read_output(tmp_path / "out.bin", len(pos), n_local, want_atom_virial)
        want = loaded(torch.tensor(pos), torch.tensor(types), torch.tensor(edges),
                      torch.zeros(edges.shape[1], 3, dtype=torch.float64), n_local, want_atom_virial)
        rtol, atol = TOLERANCE[dtype]
        for name, a, b in zip(("atom_energy", "forces", "virial", "atom_virial"), got, want):
            np.testing.assert_allclose(a, b.detach().numpy().reshape(a.shape), rtol=rtol, atol=atol,
                                       err_msg=f"{arch} {dtype} {name}")
    write_input(tmp_path / "in.bin", np.zeros((0, 3)), np.zeros(0), np.zeros((2, 0)), 0, True)
    run = run_tool(check_tool, "run", path, tmp_path / "in.bin", tmp_path / "out.bin")
    assert run.returncode == 0, run.stdout
    assert not read_output(tmp_path / "out.bin", 0, 0, True)[2].any()


def write_package(records: dict, path: Path) -> Path:
    """The records (names relative to ``archive/``) as a package file in torch's archive layout."""
    import io

    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for name, blob in records.items():
        if name not in (".data/version", "byteorder", ".data/serialization_id"):  # the writer adds these
            writer.write_record(name, blob, len(blob))
    writer.write_end_of_file()
    path.write_bytes(out.getvalue())
    return path


def crafted_packages(package: Path, folder: Path) -> dict:
    """Packages that differ from a good one in one respect each. Those whose change is under data/ get the
    digest of their new records where asked, so that a check after the digest is the one that refuses them."""
    import json
    import platform

    from mdpot.deploy.aoti import package_digest, read_records

    good = read_records(package.read_bytes(), str(package))
    target = json.loads(good["mdpot/target"])
    program_meta = [k for k in good if k.startswith("data/") and k.endswith("_metadata.json")]
    assert program_meta
    # a flag whose feature no CPU of this machine's architecture has
    foreign_flag = "-mavx512f" if platform.machine() in ("aarch64", "arm64") else "-msve-vector-bits=256"

    def craft(name, meta=None, target_changes=None, target_text=None, program=None, redigest=False):
        records = dict(good)
        for key, value in (meta or {}).items():
            if value is None:
                records.pop(f"mdpot/{key}")
            else:
                records[f"mdpot/{key}"] = value.encode()
        if target_changes:
            records["mdpot/target"] = json.dumps(dict(target, **target_changes)).encode()
        if target_text is not None:
            records["mdpot/target"] = target_text.encode()
        for key, value in (program or {}).items():
            for record in program_meta:
                records[record] = json.dumps(dict(json.loads(records[record]), **{key: value})).encode()
        if redigest:
            records["mdpot/weights_sha256"] = package_digest(records).encode()
        return write_package(records, folder / f"{name}.pt2")

    edited = {k: v + b"\n" for k, v in good.items() if k.startswith("data/") and k.endswith(".cpp")}
    other_version = "3" if good["mdpot/mdpot_format_version"] == b"6" else "6"  # the kernels record kept
    return {
        "valid": craft("valid"),
        "version_2": craft("version_2", meta={"mdpot_format_version": "2"}),
        "version_99": craft("version_99", meta={"mdpot_format_version": "99"}),
        "version_5": craft("version_5", meta={"mdpot_format_version": "5"}),
        "kernels_version": craft("kernels_version", meta={"mdpot_format_version": other_version}),
        "missing_key": craft("missing_key", meta={"config": None}),
        "bad_units": craft("bad_units", meta={"length_units": "A"}),
        "missing_target": craft("missing_target", meta={"target": None}),
        "bad_digest": craft("bad_digest", meta={"weights_sha256": "0" * 64}),
        "edited_program": write_package(dict(good, **edited), folder / "edited_program.pt2"),
        "target_not_json": craft("target_not_json", target_text="{"),
        "target_no_flags": craft("target_no_flags", target_text=json.dumps({k: target[k] for k in
                                                                              ("device", "machine", "isa")})),
        "target_isa_mismatch": craft("target_isa_mismatch", target_changes={"isa": "zvector"}),
        "target_isa_upper_case": craft("target_isa_upper_case", target_changes={"isa": target["isa"].upper()}),
        "target_device_mismatch": craft("target_device_mismatch", target_changes={"device": "cuda"}),
        "cuda_package": craft("cuda_package", target_changes={"device": "cuda"}, program={"AOTI_DEVICE_KEY": "cuda"},
                              redigest=True),
        "other_machine": craft("other_machine", target_changes={"machine": "riscv64"},
                               program={"AOTI_MACHINE": "riscv64"}, redigest=True),
        "unknown_flag": craft("unknown_flag", target_changes={"arch_flags": target["arch_flags"] + ["-mfoo"]}),
        "missing_cpu_feature": craft("missing_cpu_feature",
                                     target_changes={"arch_flags": target["arch_flags"] + [foreign_flag]}),
    }


def test_cpp_and_python_accept_the_same_packages(check_tool, aoti_models, tmp_path):
    """The C++ and Python loaders accept and refuse the same crafted packages, for the same reason where both
    name it; a CPU package asked to run on CUDA is refused before loading."""
    package = aoti_models["allegro", "float64"]
    files = crafted_packages(package, tmp_path)
    verdicts = verdicts_of(check_tool, files)
    accepted = sorted(k for k, v in verdicts.items() if v[0] == "OK")
    assert accepted == ["target_isa_upper_case", "valid"], verdicts
    cpp = {k: v[1] for k, v in verdicts.items()}
    p = str(tmp_path)
    from mdpot.deploy.aoti import read_records

    assert cpp["version_2"] == (f"REFUSED: '{p}/version_2.pt2' is an AOTInductor package with mdpot_format_version "
                                "'2'; packages are version 3 or 6")
    kernels, version = ("fused", 3) if "mdpot/kernels" in read_records(package.read_bytes(), "x") else ("reference", 6)
    assert cpp["kernels_version"] == (f"REFUSED: '{p}/kernels_version.pt2': metadata kernels '{kernels}' with "
                                      f"mdpot_format_version {version} (packages calling the fused kernels are "
                                      "version 6, and only they); deploy it again")
    assert "its compiled program does not match the digest recorded at deploy" in cpp["edited_program"]
    assert cpp["missing_target"] == (f"REFUSED: '{p}/missing_target.pt2' is not an mdpot package: missing metadata "
                                     "key target (is it written by `mdpot deploy --format aoti`?)")
    assert cpp["other_machine"] == (f"REFUSED: '{p}/other_machine.pt2' is compiled for riscv64 machines, this one is "
                                    f"{__import__('platform').machine()}; deploy it again on this machine, or deploy "
                                    "with --format torchscript")
    assert "says isa 'zvector', the compiled program says" in cpp["target_isa_mismatch"]
    assert "instruction-set flag(s) -mfoo that this mdpot does not know" in cpp["unknown_flag"]
    assert "is compiled for CPU features this machine lacks: " in cpp["missing_cpu_feature"]
    assert "is compiled for device cuda and cannot run on cpu" in cpp["cuda_package"]
    cuda = run_tool(check_tool, "check", package, "cuda")
    assert cuda.returncode == 1 and cuda.stdout.strip() == (
        f"REFUSED: '{package}' is compiled for device cpu and cannot run on cuda; deploy it again on this machine, "
        "or deploy with --format torchscript"), cuda.stdout


def test_runner_binds_files_to_their_device(check_tool, models, reference_model, aoti_models, tmp_path):
    """The device a file is bound to, read from its records (what the pair style's `device auto` follows): the CPU
    for a file calling the fused kernels and for a CPU package, CUDA for a CUDA package, none for a reference file
    (and for what cannot be read). A fused file asked to run on CUDA is refused before loading, in the Python
    loader's words, also where there is no CUDA."""
    from mdpot.deploy import load_model

    package = aoti_models["allegro", "float64"]
    fused = models["float64"]
    cases = {fused: "cpu", reference_model: "-", package: "cpu",
             crafted_packages(package, tmp_path)["cuda_package"]: "cuda", tmp_path / "missing.pt": "-"}
    for path, bound in cases.items():
        run = run_tool(check_tool, "bound-device", path)
        assert (run.returncode, run.stdout) == (0, bound + "\n"), (path, run.stdout)
    refused = run_tool(check_tool, "check", fused, "cuda")
    reason = ("calls mdpot's fused kernels (kernels fused), which run on the CPU only, not on cuda; deploy it with "
              "--kernels reference to run it there")
    assert (refused.returncode, refused.stdout) == (1, f"REFUSED: '{fused}' {reason}\n")
    with pytest.raises(ValueError) as info:
        load_model(fused, device="cuda")
    assert str(info.value) == f"{fused}: {reason}"


# -- format version 4: message passing with a short-range pair term ----------------------------------------------

def without_methods(energy_model, names, out: Path, **meta_changes) -> Path:
    """``energy_model`` deployed by hand without the exported contract methods ``names`` (as a file written before
    they existed would be): its metadata plus ``meta_changes``, with a matching weights digest."""
    from mdpot.deploy import eager_model, weights_digest
    from mdpot.deploy import metadata as md

    eager = eager_model(energy_model, "float64")
    module = eager.module
    # a subclass whose methods of these names are plain Python: not exported, so not compiled
    module.__class__ = type("Without", (type(module),), {name: (lambda self, *args: None) for name in names})
    scripted = torch.jit.script(module)
    meta = dict(eager.metadata, **meta_changes)
    meta[md.WEIGHTS_SHA256] = weights_digest(scripted)
    torch.jit.save(scripted, str(out), _extra_files=md.encode(meta))
    return out


def test_cpp_and_python_agree_on_version_4(check_tool, repulsion_models, tmp_path):
    """A version-4 file must be message-passing TorchScript with the whole block interface, mp_has_pair and mp_pair
    included: both loaders refuse the same files, with the same reason. Version 2 keeps loading with or without
    the pair methods (a file of an mdpot before them, or one with a pair term that this mdpot runs right)."""
    from mdpot.deploy import load_model
    from mdpot.testing import small_model

    nequip, allegro = repulsion_models["nequip"], repulsion_models["allegro"]
    assert load_model(nequip).metadata["mdpot_format_version"] == 4
    assert load_model(allegro).metadata["mdpot_format_version"] == 2
    extra = {k: "" for k in ALL_KEYS}
    files = {"nequip": nequip}
    for name, source, changes in (("nequip_as_2", nequip, {"mdpot_format_version": "2"}),
                                  ("allegro_as_4", allegro, {"mdpot_format_version": "4"}),
                                  ("layers_mismatch", nequip, {"num_layers": "3", "receptive_field": "10.5"})):
        module = torch.jit.load(str(source), _extra_files=extra)
        meta = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
        files[name] = tmp_path / f"{name}.pt"
        torch.jit.save(module, str(files[name]), _extra_files=dict(meta, **changes))
    energy = small_model("nequip", ("Cu", "Au"), seed=4, repulsion="zbl")
    files["no_pair_as_4"] = without_methods(energy, ("mp_has_pair", "mp_pair"), tmp_path / "no_pair_as_4.pt")
    files["no_pair_as_2"] = without_methods(energy, ("mp_has_pair", "mp_pair"), tmp_path / "no_pair_as_2.pt",
                                            mdpot_format_version=2)
    files["no_vjp"] = without_methods(energy, ("mp_block_vjp",), tmp_path / "no_vjp.pt")
    verdicts = verdicts_of(check_tool, files)
    assert sorted(k for k, v in verdicts.items() if v[0] == "OK") == ["nequip", "nequip_as_2", "no_pair_as_2"], verdicts
    reasons = {
        "allegro_as_4": "its module has no block-by-block (mp_*) methods (strictly local, wrapped, or deployed before "
                        "them)",
        "layers_mismatch": "mp_num_blocks() = 2 and 2 feature widths do not match num_layers 3",
        "no_pair_as_4": "its module lacks mp_has_pair, mp_pair",
        "no_vjp": "its module lacks mp_block_vjp",
    }
    for name, why in reasons.items():
        python, cpp = verdicts[name]
        assert python == (f"refused: {files[name]}: model format version 4 is for message-passing TorchScript files "
                          f"with a short-range pair term, but {why}; deploy it again"), python
        assert cpp == (f"REFUSED: '{files[name]}': mdpot_format_version 4 is for message-passing TorchScript files "
                       f"with a short-range pair term, but {why}; deploy it again"), cpp


def test_cpp_and_python_agree_on_committee_files(check_tool, reference_model, arch, tmp_path):
    """Committee files (version 7, rule 14): both loaders accept a good one and refuse the same damaged ones, for the
    same reason: committee_size below 2 or not an integer, committee_members not a list of K objects, a key
    missing, or a committee key in a single model's file."""
    if arch != "allegro":
        pytest.skip("the rules do not depend on the architecture: checked once, on Allegro members")
    from mdpot.contract import COMMITTEE_KEYS
    from mdpot.deploy import deploy_committee
    from mdpot.testing import small_model

    good = deploy_committee([small_model("allegro", ("Cu", "Au"), seed=0), small_model("allegro", ("Cu", "Au"),
                                                                                        seed=1)],
                            tmp_path / "committee.pt", kernels="reference").path
    keys = list(ALL_KEYS) + list(COMMITTEE_KEYS) + ["kernels"]
    files = {"committee": good}
    for name, source, changes in (
            ("size_1", good, {"committee_size": "1"}),
            ("size_3", good, {"committee_size": "3"}),
            ("size_text", good, {"committee_size": "two"}),
            ("members_numbers", good, {"committee_members": "[1, 2]"}),
            ("members_object", good, {"committee_members": '{"a": {}, "b": {}}'}),
            ("members_bad_json", good, {"committee_members": "[{}, {]"}),
            ("members_missing", good, {"committee_members": None}),
            ("single_with_size", reference_model, {"committee_size": "2"})):
        extra = {k: "" for k in keys}
        module = torch.jit.load(str(source), _extra_files=extra)
        meta = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
        meta = {k: v for k, v in dict(meta, **changes).items() if v}
        files[name] = tmp_path / f"{name}.pt"
        torch.jit.save(module, str(files[name]), _extra_files=meta)
    verdicts = verdicts_of(check_tool, files)
    assert sorted(k for k, v in verdicts.items() if v[0] == "OK") == ["committee"], verdicts
    reasons = {
        "size_1": "metadata committee_size must be an integer >= 2, got '1'",
        "size_text": "metadata committee_size must be an integer >= 2, got 'two'",
        "size_3": "metadata committee_members must be a JSON list of 3 objects (committee_size 3)",
        "members_numbers": "metadata committee_members must be a JSON list of 2 objects (committee_size 2)",
        "members_object": "metadata committee_members must be a JSON list of 2 objects (committee_size 2)",
        "members_bad_json": "metadata committee_members is not valid JSON",
        "members_missing": "a committee file (mdpot_format_version 7) without metadata committee_members; deploy it "
                           "again",
        "single_with_size": "metadata committee_size in a file of mdpot_format_version 2 (committee files are version "
                            "7); deploy it again",
    }
    for name, why in reasons.items():
        python, cpp = verdicts[name]
        assert why in python and why in cpp, (name, python, cpp)
