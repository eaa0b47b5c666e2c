"""AOTInductor packages (``.pt2``, format version 3, or 6 with the fused kernels): the writer's guarantees, the loader's refusals, the CLI and the
calculator on packages, and the contract's edge cases (docs/contract.md, "AOTInductor packages").

The packages are the session's ``aoti_models`` (compiled once); refusals are checked on copies whose records are
edited and, where the digest must still match, signed again with :func:`mdpot.deploy.aoti.package_digest`."""
import json
import pickle
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from mdpot import MDPotCalculator
from mdpot import contract as c
from mdpot.cli import main
from mdpot.data import TypeMapper, atoms_to_graph
from mdpot.deploy import SelfCheckError, aoti, deploy_model, eager_model, load_model
from mdpot.deploy import metadata as md
from mdpot.testing import alloy, assert_allclose, small_model, tolerance
from mdpot.testing.aoti import OTHER_KERNELS_CASE, case_kernels

ELEMENTS = ("Cu", "Au")


@pytest.fixture(scope="module")
def package(aoti_models):
    return aoti_models[("allegro", "float64")]


def _version(kernels):
    return c.AOTI_FUSED_FORMAT_VERSION if kernels == "fused" else c.AOTI_FORMAT_VERSION


def _records(path):
    return aoti.read_records(path.read_bytes(), str(path))


def _forge(src, dst, edit, resign=True):
    """Write ``dst``: the package ``src`` with its records passed through ``edit(records)``; with ``resign`` its
    ``weights_sha256`` record becomes the digest of the edited ``data/`` records."""
    records = _records(src)
    edit(records)
    meta = {key: records[f"mdpot/{key}"].decode() for key in md.ALL_KEYS if f"mdpot/{key}" in records}
    if resign:
        meta[md.WEIGHTS_SHA256] = aoti.package_digest(records)
    for key, text in meta.items():
        records[f"mdpot/{key}"] = text.encode()
    out = torch._C.PyTorchFileWriter(str(dst))
    for name, blob in records.items():
        if name not in (".data/version", "byteorder", ".data/serialization_id"):
            out.write_record(name, blob, len(blob))
    out.write_end_of_file()
    return dst


def _program_meta_names(records):
    return [n for n in records if n.startswith("data/aotinductor/model/") and n.endswith("_metadata.json")]


def _set_program_meta(records, **values):
    for name in _program_meta_names(records):
        meta = json.loads(records[name])
        meta.update(values)
        records[name] = json.dumps(meta).encode()


def _set_target(records, **values):
    target = json.loads(records["mdpot/target"])
    target.update(values)
    records["mdpot/target"] = json.dumps(target).encode()


def _so_name(records):
    return next(n for n in records if n.endswith(".so"))


# -- the writer ------------------------------------------------------------------------------------------------


def test_package_layout_and_metadata(package):
    with zipfile.ZipFile(package) as z:
        names = z.namelist()
    assert all(n.startswith("archive/") for n in names)
    assert {f"archive/mdpot/{k}" for k in md.ALL_KEYS + (c.AOTI_TARGET,)} <= set(names)
    records = _records(package)
    model = load_model(package)
    kernels = case_kernels("allegro", "float64")
    assert model.format == "aoti" and model.metadata[md.FORMAT_VERSION_KEY] == _version(kernels)
    # the kernels record only where it is not the reference, as in TorchScript files
    assert model.metadata[md.KERNELS_KEY] == kernels and ("mdpot/kernels" in records) == (kernels == "fused")
    assert model.metadata[md.WEIGHTS_SHA256] == aoti.package_digest(records)
    program = aoti.program_metadata(records, "x")
    assert model.target["device"] == program["AOTI_DEVICE_KEY"] == "cpu"
    assert model.target["isa"] == program["AOTI_CPU_ISA"].lower()
    table = dict(c.AOTI_ARCH_FLAG_FEATURES)
    assert model.target["arch_flags"] and all(flag in table for flag in model.target["arch_flags"])
    # compiled with dynamic threads (the default): OpenMP loops without a thread count baked in from the deploy
    # (the fixture compiles at one torch thread, where inductor would otherwise emit no parallel loop at all)
    assert model.target["threads"] == "dynamic"
    kernels = "".join(records[n].decode() for n in records if n.endswith(".cpp"))
    assert "#pragma omp parallel" in kernels and "num_threads(" not in kernels
    # the weights live in the library: counted on the model the config describes
    assert model.num_parameters == sum(p.numel() for p in small_model("allegro", ELEMENTS).parameters())


def test_both_kernel_sets_are_compiled(aoti_models):
    """The session's packages cover both tensor-product kernels (``OTHER_KERNELS_CASE``), so the physics and LAMMPS
    rows run version-3 and version-6 packages; a fused program calls mdpot's operators, a reference one does not."""
    seen = {}
    for case, path in aoti_models.items():
        model = load_model(path)
        kernels = model.metadata[md.KERNELS_KEY]
        assert kernels == case_kernels(*case) and model.metadata[md.FORMAT_VERSION_KEY] == _version(kernels)
        records = _records(path)
        code = "".join(records[n].decode(errors="replace") for n in records if n.endswith((".cpp", ".json")))
        op = "tp_gather" if case[0] == "allegro" else "tp_scatter"
        assert (f"mdpot::{op}" in code or f"mdpot.{op}" in code) == (kernels == "fused"), case
        seen.setdefault(kernels, []).append(case)
    assert sorted(seen) == ["fused", "reference"] and [OTHER_KERNELS_CASE] in seen.values()


def test_mdpot_records_hold_no_machine_path(package):
    """Row 32 for packages: mdpot's own records (AOTInductor's hold compile commands; docs/contract.md)."""
    records = _records(package)
    texts = [records[n].decode() for n in records if n.startswith("mdpot/")]
    needles = [str(Path(__file__).resolve().parents[1]), tempfile.gettempdir(), str(Path.home()), sys.prefix]
    assert [(n, t) for n in needles for t in texts if n in t] == []


def test_self_check_failure_leaves_nothing(package, tmp_path, monkeypatch):
    """A program that disagrees with the eager model (here: the seed-0 program for a seed-1 model) is refused by the
    deploy self-check and nothing is left at the path, nor a temporary file."""
    _reuse_program(package, monkeypatch)
    out = tmp_path / "m.pt2"
    with pytest.raises(SelfCheckError, match=r"compiled model does not match the eager model: self-check per-atom "
                                             r"energy: max \|error\| .* exceeds tolerance 1.0e-12"):
        deploy_model(small_model("allegro", ELEMENTS, seed=1), out, format="aoti")
    assert list(tmp_path.iterdir()) == []


def test_deploy_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown deploy format 'onnx'; expected one of \['torchscript', 'aoti'\]"):
        deploy_model(small_model("allegro"), tmp_path / "m.pt", format="onnx")
    with pytest.raises(ValueError, match="cpu_isa 'avx2' applies to AOTInductor packages only"):
        deploy_model(small_model("allegro"), tmp_path / "m.pt", cpu_isa="avx2")
    with pytest.raises(ValueError, match=r"unknown aoti_threads 'many'; expected one of \['dynamic', 'serial'\]"):
        deploy_model(small_model("allegro"), tmp_path / "m.pt2", format="aoti", aoti_threads="many")
    with pytest.raises(ValueError, match="aoti_threads 'serial' applies to AOTInductor packages only"):
        deploy_model(small_model("allegro"), tmp_path / "m.pt", aoti_threads="serial")
    with pytest.raises(ValueError, match=r"^unknown kernels 'fast'; expected one of \['reference', 'fused'\]$"):
        deploy_model(small_model("allegro"), tmp_path / "m.pt2", format="aoti", kernels="fast")
    assert list(tmp_path.iterdir()) == []


# -- the contract on packages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["one atom", "no edges", "no local atoms", "ghosts"])
def test_edge_cases(aoti_models, arch, dtype, case):
    model = load_model(aoti_models[(arch, dtype)])
    eager = eager_model(small_model(arch, ELEMENTS, seed=0), dtype)
    atoms = alloy(ELEMENTS, (2, 2, 2), seed=2)
    g = atoms_to_graph(atoms, model.r_max, TypeMapper(ELEMENTS))
    pos, types, edges, shifts, n_local = g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms
    if case == "one atom":
        pos, types, n_local = pos[:1], types[:1], 1
        edges, shifts = edges[:, :0], shifts[:0]
    elif case == "no edges":
        edges, shifts = edges[:, :0], shifts[:0]
    elif case == "no local atoms":
        n_local = 0
    else:
        n_local = 5
    tol = tolerance("deploy", dtype)
    for virial in (True, False):
        got = model(pos, types, edges, shifts, n_local, virial)
        want = eager.module(pos, types, edges, shifts, n_local, virial)
        for name, a, b in zip(("per-atom energy", "forces", "virial", "per-atom virial"), got, want):
            assert a.dtype == torch.float64 and a.shape == b.shape, name
            assert_allclose(a, b, tol, f"{case} {name}")
    assert got[3].shape == (0, 3, 3)


def test_n_local_out_of_range(package):
    model = load_model(package)
    pos = torch.zeros((2, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"n_local must lie in 0 \.\. 2 \(the number of atoms\), got 3"):
        model(pos, torch.zeros(2, dtype=torch.int64), torch.zeros((2, 0), dtype=torch.int64),
              torch.zeros((0, 3), dtype=torch.float64), 3)


def test_overlapping_runner_equals_torchs_loader(package, monkeypatch):
    """With the operator library built, a CPU package runs through torch.classes.mdpot.PackageRunner, whose calls
    from different threads overlap (Python's lock released, one program state per core): the same numbers, bit for
    bit, as torch's own loader, which the module falls back to when the library is not there."""
    import concurrent.futures

    fast = load_model(package)
    assert fast.module.overlapping
    atoms = alloy(ELEMENTS, (2, 2, 2), seed=8)
    g = atoms_to_graph(atoms, fast.r_max, TypeMapper(ELEMENTS))
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, len(atoms), True)
    monkeypatch.setattr(aoti, "_overlapping_runner", lambda path: None)
    plain = load_model(package)
    assert not plain.module.overlapping
    want = plain(*args)

    def one_thread(_):  # a new thread starts with OpenMP's default count; this package's loops follow the count
        torch.set_num_threads(1)
        return fast(*args)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        runs = [fast(*args)] + list(concurrent.futures.ThreadPoolExecutor(2).map(one_thread, range(4)))
    finally:
        torch.set_num_threads(threads)
    for k, got in enumerate(runs):
        for name, a, b in zip(("atom_energy", "forces", "virial", "atom_virial"), got, want):
            assert torch.equal(a, b), f"run {k}: {name} differs by {(a - b).abs().max().item():.3g}"


@pytest.mark.parametrize("max_edges", [None, 150])
def test_calculator_package_vs_torchscript(aoti_models, deployed_torchscript, arch, dtype, max_edges):
    """Row 12 across formats: the two deployments of the same weights agree to twice row 1's tolerance, also in
    chunks (Allegro) and after pickling."""
    kwargs = {} if max_edges is None or arch != "allegro" else {"max_edges": max_edges}
    tol = 2 * tolerance("deploy", dtype)
    atoms = alloy(ELEMENTS, (3, 3, 2), seed=6)
    results = []
    for calc in (MDPotCalculator(aoti_models[(arch, dtype)], **kwargs), MDPotCalculator(deployed_torchscript.path, **kwargs)):
        atoms.calc = calc
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(),
                        atoms.get_stresses()))
    for name, a, b in zip(("energy", "forces", "stress", "stresses"), *results):
        assert_allclose(a, b, tol, name)
    again = pickle.loads(pickle.dumps(MDPotCalculator(aoti_models[(arch, dtype)], **kwargs)))
    assert again.model.format == "aoti"
    atoms.calc = again
    assert_allclose(atoms.get_forces(), results[1][1], tol, "forces after pickling")


def test_pickled_calculator_carries_bytes_when_the_file_changed(package, tmp_path):
    copy = tmp_path / "m.pt2"
    copy.write_bytes(package.read_bytes())
    calc = MDPotCalculator(copy)
    copy.write_bytes(b"gone")
    again = pickle.loads(pickle.dumps(calc))
    atoms = alloy(ELEMENTS, seed=1)
    atoms.calc = again
    energy = atoms.get_potential_energy()
    atoms.calc = MDPotCalculator(package)
    assert energy == atoms.get_potential_energy()


def test_device_refusals(package):
    model = load_model(package)
    assert model.to("cpu") is model
    with pytest.raises(ValueError, match=rf"^{package}: compiled for device cpu, cannot run on meta; deploy it again "
                                         r"on this machine, or deploy with --format torchscript$"):
        model.to("meta")


# -- the loader's refusals -------------------------------------------------------------------------------------


def _expect(path, expected, capsys):
    with pytest.raises(ValueError) as info:
        load_model(path)
    assert str(info.value) == expected
    assert main(["info", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"mdpot: error: {expected}"


def _missing_feature_flag():
    features = aoti.machine_features()
    for flag, needs in c.AOTI_ARCH_FLAG_FEATURES:
        if flag.startswith("-m") and not flag.startswith("-march") and not set(needs) <= features:
            return flag, [f for f in needs if f not in features]
    pytest.skip("this CPU has every feature of the table")


def test_truncated_and_damaged(package, tmp_path, capsys):
    data = package.read_bytes()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(data[: len(data) // 2])
    _expect(cut, f"{cut}: not an mdpot model (neither a TorchScript archive nor an AOTInductor package; truncated "
                 f"or corrupt?)", capsys)
    # one byte of the library changed in place: the zip checksum no longer matches
    so = _so_name(_records(package))
    with zipfile.ZipFile(package) as z:
        info = z.getinfo(f"archive/{so}")
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    flipped = tmp_path / "flipped.pt2"
    flipped.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    _expect(flipped, f"{flipped}: a damaged AOTInductor package (Bad CRC-32 for file 'archive/{so}'); deploy it "
                     f"again", capsys)


def test_edited_library_fails_the_digest(package, tmp_path, capsys):
    def edit(records):
        so = _so_name(records)
        blob = bytearray(records[so])
        blob[len(blob) // 2] ^= 0xFF
        records[so] = bytes(blob)

    path = _forge(package, tmp_path / "edited.pt2", edit, resign=False)
    digest = load_model(package).metadata[md.WEIGHTS_SHA256]
    edited = aoti.package_digest(_records(path))
    _expect(path, f"{path}: the compiled program does not match the digest recorded at deploy ({edited[:12]}… != "
                  f"{digest[:12]}…): the file was modified after `mdpot deploy`", capsys)


@pytest.mark.parametrize("case", ["feature", "machine", "cuda", "unknown flag", "target edited", "version 2",
                                  "version 5", "kernels version", "kernels record", "missing key", "missing target",
                                  "bad target"])
def test_forged_packages(package, tmp_path, case, capsys):
    path = tmp_path / "forged.pt2"
    again = "deploy it again on this machine, or deploy with --format torchscript"
    resign = True
    if case == "feature":
        flag, missing = _missing_feature_flag()
        flags = json.loads(_records(package)["mdpot/target"])["arch_flags"] + [flag]
        edit = lambda r: _set_target(r, arch_flags=flags)  # noqa: E731
        isa = load_model(package).target["isa"]
        expected = (f"{path}: compiled for CPU features this machine lacks: {' '.join(missing)} (isa {isa}); {again}, "
                    f"or with --cpu-isa for the oldest CPU it runs on")
    elif case == "machine":
        def edit(r):
            _set_target(r, machine="aarch64")
            _set_program_meta(r, AOTI_MACHINE="aarch64")
        expected = f"{path}: compiled for aarch64 machines, this one is x86_64; {again}"
        if aoti.platform.machine() != "x86_64":
            pytest.skip("the forged machine is this one's")
    elif case == "cuda":
        def edit(r):
            _set_target(r, device="cuda")
            _set_program_meta(r, AOTI_DEVICE_KEY="cuda")
        expected = f"{path}: compiled for device cuda, cannot run on cpu; {again}"
    elif case == "unknown flag":
        edit = lambda r: _set_target(r, arch_flags=["-mavx2", "-mfancy"])  # noqa: E731
        expected = f"{path}: compiled with instruction-set flag(s) -mfancy that this mdpot does not know; {again}"
    elif case == "target edited":  # the mdpot records are not digested: target must agree with the program's own
        edit = lambda r: _set_target(r, isa="avx2")  # noqa: E731
        program = aoti.program_metadata(_records(package), "x")["AOTI_CPU_ISA"]
        expected = (f"{path}: metadata target says isa 'avx2', the compiled program says '{program}': the package "
                    f"was edited after `mdpot deploy`")
        resign = False
    elif case in ("version 2", "version 5"):  # a TorchScript file's version, 5 one of fused TorchScript files
        version = case[-1]
        edit = lambda r: r.__setitem__(f"mdpot/{md.FORMAT_VERSION_KEY}", version.encode())  # noqa: E731
        expected = (f"{path}: an AOTInductor package claiming model format version {version} (packages are version "
                    f"3 or 6); deploy it again")
    elif case == "kernels version":  # the other package version, the kernels record kept
        kernels = case_kernels("allegro", "float64")
        version = 3 if kernels == "fused" else 6
        edit = lambda r: r.__setitem__(f"mdpot/{md.FORMAT_VERSION_KEY}", str(version).encode())  # noqa: E731
        expected = (f"{path}: metadata kernels {kernels!r} with mdpot_format_version {version} (packages calling the "
                    f"fused kernels are version 6, and only they); deploy it again")
    elif case == "kernels record":  # the other kernels record, the version kept
        kernels = "reference" if case_kernels("allegro", "float64") == "fused" else "fused"
        version = _version(case_kernels("allegro", "float64"))
        edit = lambda r: r.__setitem__("mdpot/kernels", kernels.encode())  # noqa: E731
        expected = (f"{path}: metadata kernels {kernels!r} with mdpot_format_version {version} (packages calling the "
                    f"fused kernels are version 6, and only they); deploy it again")
    elif case == "missing key":
        edit = lambda r: r.pop(f"mdpot/{md.ELEMENTS}")  # noqa: E731
        expected = f"{path}: missing mdpot metadata key(s) ['elements']; is this a model written by `mdpot deploy`?"
    elif case == "missing target":
        edit = lambda r: r.pop("mdpot/target")  # noqa: E731
        expected = (f"{path}: missing mdpot metadata key(s) ['target']; is this a package written by "
                    f"`mdpot deploy --format aoti`?")
    else:
        edit = lambda r: r.__setitem__("mdpot/target", b'{"device": "cpu"}')  # noqa: E731
        expected = (f"{path}: metadata target must be a JSON object with strings device, machine, isa and a list "
                    f"arch_flags, got '{{\"device\": \"cpu\"}}'")
    _forge(package, path, edit, resign=resign)
    _expect(path, expected, capsys)


def test_fused_package_needs_the_operators(aoti_models, tmp_path, monkeypatch, capsys):
    """A version-6 package is loaded only once mdpot's operators are registered; where they cannot be, one line names
    the library and the remedy (``load_model``, ``mdpot info``); a version-3 package needs no library."""
    import mdpot.ops as ops

    by_kernels = {case_kernels(*case): path for case, path in aoti_models.items()}
    monkeypatch.setattr(ops, "ops_loaded", lambda: False)
    monkeypatch.setenv("MDPOT_PLUGIN_DIR", str(tmp_path))
    monkeypatch.setenv("MDPOT_PLUGIN_BUILD", "0")
    fused = by_kernels["fused"]
    _expect(fused, f"{fused}: calls mdpot's fused kernels (kernels fused), which this process cannot load: mdpot's "
                   f"fused kernels (libmdpot_ops.so) are not built in {tmp_path}; build them with `python -m "
                   f"mdpot.lammps.plugin`, or use --kernels reference", capsys)
    assert load_model(by_kernels["reference"]).metadata[md.FORMAT_VERSION_KEY] == c.AOTI_FORMAT_VERSION


def test_check_target_with_given_features():
    target = {"device": "cpu", "machine": "x86_64", "isa": "avx2", "arch_flags": ["-mavx2", "-mfma"]}
    program = {"AOTI_DEVICE_KEY": "cpu", "AOTI_MACHINE": "x86_64", "AOTI_CPU_ISA": "AVX2"}
    cpu = torch.device("cpu")
    aoti.check_target(target, program, cpu, "m.pt2", features=frozenset({"avx2", "fma"}), machine="x86_64")
    with pytest.raises(ValueError, match=r"^m.pt2: compiled for CPU features this machine lacks: fma \(isa avx2\)"):
        aoti.check_target(target, program, cpu, "m.pt2", features=frozenset({"avx2"}), machine="x86_64")


# -- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_info_check_validate(package, capsys, tmp_path):
    assert main(["info", str(package), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "aoti" and info["target"] == load_model(package).target
    assert info["mdpot_format_version"] == _version(case_kernels("allegro", "float64"))
    assert isinstance(info["num_parameters"], int)
    assert main(["check", str(package)]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "FAIL" not in out
    named = tmp_path / "model.pt"  # the kind comes from the content, not the name
    named.write_bytes(package.read_bytes())
    assert main(["info", str(named)]) == 0
    assert re.search(r"^format +aoti$", capsys.readouterr().out, re.M)


def _reuse_program(package, monkeypatch):
    """Make deploys reuse ``package``'s compiled program instead of compiling (the compile itself is exercised by
    the ``aoti_models`` fixture): right for a model with the same weights, caught by the self-check otherwise."""
    records = _records(package)
    data = {n: b for n, b in records.items() if n.startswith("data/")}
    monkeypatch.setattr(aoti, "compile_program", lambda *args, **kwargs: (data, json.loads(records["mdpot/target"])))


@pytest.mark.parametrize("kernels", ["reference", "fused"])
def test_cli_deploy_checkpoint_to_package(aoti_models, tmp_path, capsys, monkeypatch, kernels):
    """The default kernels without --kernels, the others with --kernels (each reusing the program of a session
    package of those kernels): version, kernels record and the line that names them."""
    from mdpot.contract import default_kernels
    from mdpot.models import create_checkpoint

    case = next(case for case in aoti_models if case_kernels(*case) == kernels)
    arch, dtype = case
    _reuse_program(aoti_models[case], monkeypatch)  # the checkpoint holds the weights of the package's model
    ckpt = tmp_path / "m.ckpt"
    create_checkpoint(small_model(arch, ELEMENTS, seed=0).config, ckpt, seed=0)
    out = tmp_path / "m.pt2"
    asked = [] if kernels == default_kernels("aoti") else ["--kernels", kernels]
    assert main(["deploy", str(ckpt), "-o", str(out), "--dtype", dtype] + asked) == 0  # .pt2: aoti without --format
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}: {arch} {dtype} AOTInductor package for ") and "self-check passed" in line
    assert (", dynamic threads, fused kernels from " in line) == (kernels == "fused"), line
    model = load_model(out)
    assert model.format == "aoti" and model.metadata[md.PROVENANCE]["checkpoint"] == "m.ckpt"
    assert model.metadata[md.KERNELS_KEY] == kernels and model.metadata[md.FORMAT_VERSION_KEY] == _version(kernels)
    assert main(["deploy", str(out), "-o", str(tmp_path / "again.pt2")]) == 1
    assert capsys.readouterr().err.strip().startswith(f"mdpot: error: {out}: is already a deployed mdpot model")


@pytest.mark.parametrize("args, expected", [
    (["-o", "{tmp}/m.pt2", "--format", "torchscript"],
     "-o {tmp}/m.pt2: the suffix .pt2 is for --format aoti, not --format torchscript; use -o {tmp}/m.pt"),
    (["-o", "{tmp}/m.pt", "--format", "aoti"],
     "-o {tmp}/m.pt: the suffix .pt is for --format torchscript, not --format aoti; use -o {tmp}/m.pt2"),
    (["-o", "{tmp}/m.pt", "--cpu-isa", "avx2"],
     "--cpu-isa avx2 applies to AOTInductor packages only; add --format aoti"),
    (["-o", "{tmp}/m.pt", "--aoti-threads", "serial"],
     "--aoti-threads serial applies to AOTInductor packages only; add --format aoti"),
])
def test_cli_deploy_format_errors(tmp_path, capsys, args, expected):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["deploy", str(tmp_path / "missing.ckpt")] + args) == 1
    assert capsys.readouterr().err.strip() == f"mdpot: error: {expected.format(tmp=tmp_path)}"
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_aoti_for_nequip_models(nequip_sources, tmp_path, capsys):
    src = nequip_sources[("allegro", "float64")]
    assert main(["deploy", str(src), "-o", str(tmp_path / "m.pt2")]) == 1
    assert capsys.readouterr().err.strip() == (f"mdpot: error: {src}: --format aoti deploys mdpot checkpoints only; "
                                               f"deploy this nequip model with --format torchscript (-o m.pt)")

