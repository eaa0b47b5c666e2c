"""AOTInductor packages (``.pt2``, format version 3, or 6 calling mdpot's fused kernels): compile the model contract
ahead of time to native code, and read such a package back after checking it (``docs/contract.md``, "AOTInductor
packages").

Writing: the contract module is traced with symbolic shapes, so that the autograd force and virial computation
unrolls into one flat graph; :func:`torch.export.export` makes the atom, edge and local-atom counts dynamic;
AOTInductor compiles it for this machine's CPU; the program's records are re-packed with mdpot's metadata records
and the ``target`` record. Reading: the records are checked (metadata, digest over ``data/``, ``target`` against the
running machine and against the compiled program's own metadata) before any of its code is loaded.

torch's inductor modules are imported inside the functions that need them: importing them costs seconds.
"""
from __future__ import annotations

import hashlib
import io
import json
import platform
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import contract as c
from . import metadata as md

#: Deploy formats, the default, their suffixes and the ``--cpu-isa`` choices (stated in :mod:`mdpot.contract`).
FORMATS = c.DEPLOY_FORMATS
DEFAULT_FORMAT = c.DEFAULT_FORMAT
FORMAT_SUFFIX = c.FORMAT_SUFFIXES
CPU_ISAS = c.AOTI_CPU_ISAS
AOTI_THREADS = c.AOTI_THREADS
#: Inductor settings of a deploy, on top of torch's defaults. None so far: compiling the wrapper (the C++ that only
#: sequences kernel calls) at -O0 instead of torch's -O1 (``aot_inductor.compile_wrapper_opt_level``) and dropping
#: line tables and frame pointers were measured on a loaded 2-core machine without a clear gain (docs/contract.md).
INDUCTOR_CONFIGS: Dict[str, Any] = {}

_TOP = "archive"
_WRITER_RECORDS = (".data/version", "byteorder", ".data/serialization_id")  # the writer adds these itself
_PROGRAM_FOLDER = f"{c.AOTI_DIGESTED_FOLDER}/aotinductor/{c.AOTI_PROGRAM}/"
#: The compiled program's metadata keys that ``target`` must agree with.
_PROGRAM_KEYS = {"device": "AOTI_DEVICE_KEY", "machine": "AOTI_MACHINE", "isa": "AOTI_CPU_ISA"}


class _Program(nn.Module):
    """The package's program: the contract's forward with ``n_local`` carried as the first dimension of an empty
    tensor (a compiled program takes shapes, not Python integers) and the per-atom virial always computed."""

    def __init__(self, potential: nn.Module) -> None:
        super().__init__()
        self.potential = potential

    def forward(self, pos, atom_type, edge_index, edge_shift, local):
        return self.potential(pos, atom_type, edge_index, edge_shift, local.shape[0], True)


# -- writing ---------------------------------------------------------------------------------------------------


def compile_program(potential: nn.Module, example: Sequence[torch.Tensor], cpu_isa: str = "native",
                    workdir: Optional[Path] = None, threads: str = "dynamic") -> Tuple[Dict[str, bytes], Dict[str, Any]]:
    """Compile the contract module ``potential`` (eager, CPU) with AOTInductor.

    ``example`` is ``(pos, atom_type, edge_index, edge_shift, local)`` of a sample structure (shapes are made
    dynamic; the values only steer tracing). Returns the program's records (names relative to ``archive/``, all
    under ``data/``) and the ``target`` record (device, machine, ISA, compiler ISA flags, ``threads``).

    ``threads``: ``"dynamic"`` compiles OpenMP loops that follow the running thread count; ``"serial"`` compiles
    none. Without this choice inductor would bake in the deploying process's thread count: ``num_threads(N)``
    when torch uses fewer threads than cores, and no parallel loop at all when it uses one.
    """
    from torch._inductor import aoti_compile_and_package
    from torch._inductor import config as inductor_config
    from torch._inductor.cpu_vec_isa import pick_vec_isa
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    from torch.export import Dim, export
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    if cpu_isa not in CPU_ISAS:
        raise ValueError(f"unknown cpu_isa {cpu_isa!r}; expected one of {list(CPU_ISAS)}")
    if threads not in c.AOTI_THREADS:
        raise ValueError(f"unknown threads {threads!r}; expected one of {list(c.AOTI_THREADS)}")
    configs = dict(INDUCTOR_CONFIGS)
    configs["cpp.dynamic_threads"] = threads == "dynamic"
    if CPU_ISAS[cpu_isa] is not None:
        configs["cpp.simdlen"] = CPU_ISAS[cpu_isa]
    program = _Program(potential).eval()
    # Without duck shapes, equal example sizes (say N == E) do not become one symbol: they stay independent.
    with fx_config.patch(use_duck_shape=False):
        graph = make_fx(program, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    n_atoms, n_edges, n_local = Dim("N", min=1), Dim("E", min=0), Dim("L", min=0)
    exported = export(graph, tuple(example), strict=False,
                      dynamic_shapes=({0: n_atoms}, {0: n_atoms}, {1: n_edges}, {0: n_edges}, {0: n_local}))
    with tempfile.TemporaryDirectory(dir=workdir, prefix="mdpot-deploy-") as tmp:
        raw = Path(tmp) / "program.pt2"
        # A private inductor cache: two deploys of the same graph at once (two users, parallel test sessions)
        # would otherwise write their outputs into the same shared cache folder, and package each other's files.
        saved_threads = torch.get_num_threads()
        try:
            if threads == "serial":
                torch.set_num_threads(1)  # inductor emits no parallel loop when it compiles at one thread
            with temporary_cache_dir(str(Path(tmp) / "inductor")):
                aoti_compile_and_package(exported, package_path=str(raw), inductor_configs=configs)
        finally:
            torch.set_num_threads(saved_threads)
        records = read_records(raw.read_bytes(), str(raw))
    with inductor_config.patch(configs):
        isa = pick_vec_isa()
    if not isa:
        raise RuntimeError("torch found no vector instruction set for this CPU; AOTInductor packages need one "
                           "(deploy with --format torchscript)")
    program_meta = program_metadata(records, "the compiled program")
    target = {"device": program_meta["AOTI_DEVICE_KEY"], "machine": program_meta["AOTI_MACHINE"],
              "isa": program_meta["AOTI_CPU_ISA"].lower(), "arch_flags": _unique(isa.build_arch_flags().split()),
              "threads": threads}
    data = {name: blob for name, blob in records.items() if name.startswith(c.AOTI_DIGESTED_FOLDER + "/")}
    return data, target


def _unique(items: Sequence[str]) -> list:
    return list(dict.fromkeys(items))


def package_digest(records: Mapping[str, bytes]) -> str:
    """The package's ``weights_sha256``: SHA-256 over every record under ``data/`` sorted by name (name relative to
    ``archive/`` in UTF-8, a zero byte, the length as 8 bytes little-endian, the bytes)."""
    h = hashlib.sha256()
    for name in sorted(n for n in records if n.startswith(c.AOTI_DIGESTED_FOLDER + "/")):
        blob = records[name]
        h.update(name.encode("utf-8") + b"\0" + struct.pack("<Q", len(blob)))
        h.update(blob)
    return h.hexdigest()


def package_bytes(data: Mapping[str, bytes], meta: Mapping[str, Any], target: Mapping[str, Any]) -> bytes:
    """The package file: the program's records ``data``, the metadata ``meta`` (typed, every key of the contract)
    as ``mdpot/<key>`` records and ``target`` as ``mdpot/target``, in torch's archive layout."""
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    records = dict(data)
    records.setdefault("archive_format", b"pt2")
    records.setdefault("archive_version", b"0")
    for key, text in md.encode(meta).items():
        records[f"{c.AOTI_METADATA_FOLDER}/{key}"] = text.encode("utf-8")
    records[f"{c.AOTI_METADATA_FOLDER}/{c.AOTI_TARGET}"] = json.dumps(dict(target), sort_keys=True).encode("utf-8")
    for name, blob in records.items():
        if name not in _WRITER_RECORDS:
            writer.write_record(name, blob, len(blob))
    writer.write_end_of_file()
    return out.getvalue()


# -- reading ---------------------------------------------------------------------------------------------------


def is_package(names: Sequence[str]) -> bool:
    """Whether a zip archive's member ``names`` are those of an AOTInductor package (a ``data/aotinductor/``
    folder under the archive's top folder)."""
    return any(len(p) >= 4 and p[1] == c.AOTI_DIGESTED_FOLDER and p[2] == "aotinductor"
               for p in (n.split("/") for n in names))


def read_records(data: bytes, source: str) -> Dict[str, bytes]:
    """Every record of the zip archive ``data``, by name relative to its top folder; a one-line ``ValueError``
    for a damaged archive (a bad checksum included)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            records = {}
            for info in z.infolist():
                if info.is_dir():
                    continue
                top, _, rest = info.filename.partition("/")
                records[rest or top] = z.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{source}: a damaged AOTInductor package ({exc}); deploy it again") from None
    return records


def program_metadata(records: Mapping[str, bytes], source: str) -> Dict[str, str]:
    """The compiled program's own metadata (``data/aotinductor/model/*_metadata.json``: ``AOTI_DEVICE_KEY``,
    ``AOTI_MACHINE``, ``AOTI_CPU_ISA``, …); every such file must agree."""
    found: Optional[Dict[str, str]] = None
    for name in sorted(records):
        if name.startswith(_PROGRAM_FOLDER) and name.endswith("_metadata.json"):
            try:
                values = json.loads(records[name])
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ValueError(f"{source}: {name} is not JSON; deploy it again") from None
            if not isinstance(values, dict) or found not in (None, values):
                raise ValueError(f"{source}: the compiled program's metadata files disagree; deploy it again")
            found = values
    if found is None or any(not isinstance(found.get(k), str) for k in _PROGRAM_KEYS.values()):
        raise ValueError(f"{source}: the compiled program has no metadata naming its device, machine and CPU ISA "
                         f"({_PROGRAM_FOLDER}*_metadata.json); deploy it again")
    return found


def machine_features() -> FrozenSet[str]:
    """The CPU features of this machine (``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on ARM)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def parse_target(text: str, source: str) -> Dict[str, Any]:
    """The ``target`` record as a dict with ``device``, ``machine``, ``isa`` (strings) and ``arch_flags``."""
    try:
        target = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: metadata {c.AOTI_TARGET} is not valid JSON ({exc})") from None
    if not (isinstance(target, dict) and all(isinstance(target.get(k), str) for k in _PROGRAM_KEYS)
            and isinstance(target.get("arch_flags"), list)
            and all(isinstance(f, str) for f in target["arch_flags"])):
        raise ValueError(f"{source}: metadata {c.AOTI_TARGET} must be a JSON object with strings device, machine, isa "
                         f"and a list arch_flags, got {text!r}")
    return target


def check_target(target: Mapping[str, Any], program_meta: Mapping[str, str], device: torch.device, source: str,
                 features: Optional[FrozenSet[str]] = None, machine: Optional[str] = None) -> None:
    """Refuse, in one line naming the mismatch, a package whose ``target`` disagrees with its compiled program's
    metadata, or that cannot run here: another device type than ``device``, another machine architecture, or a
    CPU without a feature its compiler flags need. ``features`` and ``machine`` default to this machine's."""
    for key, program_key in _PROGRAM_KEYS.items():
        if target[key].lower() != program_meta[program_key].lower():
            raise ValueError(f"{source}: metadata {c.AOTI_TARGET} says {key} {target[key]!r}, the compiled program says "
                             f"{program_meta[program_key]!r}: the package was edited after `mdpot deploy`")
    again = "deploy it again on this machine, or deploy with --format torchscript"
    if target["device"] != device.type:
        raise ValueError(f"{source}: compiled for device {target['device']}, cannot run on {device}; {again}")
    machine = platform.machine() if machine is None else machine
    if target["machine"] != machine:
        raise ValueError(f"{source}: compiled for {target['machine']} machines, this one is {machine}; {again}")
    if target["device"] != "cpu":
        return
    table = dict(c.AOTI_ARCH_FLAG_FEATURES)
    unknown = [f for f in target["arch_flags"] if f not in table]
    if unknown:
        raise ValueError(f"{source}: compiled with instruction-set flag(s) {' '.join(unknown)} that this mdpot does "
                         f"not know; {again}")
    features = machine_features() if features is None else features
    missing = _unique([feat for flag in target["arch_flags"] for feat in table[flag] if feat not in features])
    if missing:
        raise ValueError(f"{source}: compiled for CPU features this machine lacks: {' '.join(missing)} "
                         f"(isa {target['isa']}); {again}, or with --cpu-isa for the oldest CPU it runs on")


@dataclass(frozen=True)
class Package:
    """A package's checked content: its records, typed metadata and target."""

    data: bytes
    records: Dict[str, bytes]
    metadata: Dict[str, Any]
    target: Dict[str, Any]


def check_package(data: bytes, source: str, device: torch.device) -> Package:
    """Check the package file content ``data`` in the contract's order (metadata, digest, target) without loading
    any of its code; one-line ``ValueError`` naming ``source`` and what is wrong."""
    records = read_records(data, source)
    folder = c.AOTI_METADATA_FOLDER + "/"
    raw = {key: records[folder + key].decode("utf-8", errors="replace")
           for key in md.ALL_KEYS + (md.KERNELS_KEY,) + md.OPTIONAL_KEYS if folder + key in records}
    meta = md.decode(raw, source, package=True)
    target_text = records.get(folder + c.AOTI_TARGET, b"").decode("utf-8", errors="replace")
    if not target_text:
        raise ValueError(f"{source}: missing mdpot metadata key(s) {[c.AOTI_TARGET]}; is this a package written by "
                         f"`mdpot deploy --format aoti`?")
    digest = package_digest(records)
    if digest != meta[md.WEIGHTS_SHA256]:
        raise ValueError(f"{source}: the compiled program does not match the digest recorded at deploy "
                         f"({digest[:12]}… != {meta[md.WEIGHTS_SHA256][:12]}…): the file was modified after `mdpot deploy`")
    target = parse_target(target_text, source)
    check_target(target, program_metadata(records, source), device, source)
    return Package(data, records, meta, target)


class AOTIModule(nn.Module):
    """A loaded AOTInductor package behind the contract's ``forward`` (``docs/contract.md``).

    ``forward(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)`` returns
    ``(atom_energy [n_local] eV, forces [N, 3] eV/Å, virial [3, 3] eV, atom_virial [N, 3, 3] or [0, 3, 3] eV)``,
    float64 on the CPU. It has no parameters of its own (the weights are inside the compiled library):
    :attr:`num_parameters` counts those of the model its config describes. Pickles as the package's bytes.
    """

    def __init__(self, package: Package, source: str) -> None:
        from torch._inductor import aoti_load_package

        super().__init__()
        self.package = package
        self.source = source
        if package.metadata[md.FORMAT_VERSION_KEY] == md.AOTI_FUSED_FORMAT_VERSION:
            # the program calls torch.ops.mdpot.*: they must be registered before AOTInductor loads it
            from .load import require_fused_ops

            require_fused_ops(source)
        #: Calls from different threads overlap (a CPU package run by mdpot's own loader, ``_overlapping_runner``);
        #: otherwise they run one after the other (torch's Python loader holds Python's lock while it runs).
        self.overlapping = False
        self._run = None
        # Loaded from a private copy of the checked bytes: the file at ``source`` may change after the checks.
        with tempfile.TemporaryDirectory(prefix="mdpot-aoti-") as tmp:
            path = Path(tmp) / "model.pt2"
            path.write_bytes(package.data)
            try:
                if package.target["device"] == "cpu":
                    self._run = _overlapping_runner(path)
                self.overlapping = self._run is not None
                if self._run is None:
                    runner = aoti_load_package(str(path))
                    self._run = lambda inputs: runner(*inputs)
            except Exception as exc:  # torch raises RuntimeError and friends
                from .load import torch_error_summary

                raise ValueError(f"{source}: AOTInductor could not load the package ({torch_error_summary(exc)})") \
                    from None

    @property
    def num_parameters(self) -> Optional[int]:
        """Parameters of the model the package was compiled from, counted on a model built from its config
        (``None`` when the config is not an mdpot one)."""
        from ..models import build_model, make_config

        meta = self.package.metadata
        try:
            config = make_config(meta[md.ARCHITECTURE], meta[md.CONFIG])
        except (KeyError, TypeError, ValueError):
            return None
        with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the caller's RNG
            return sum(p.numel() for p in build_model(config).parameters())

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                n_local: int, compute_atom_virial: bool = False):
        n_atoms = pos.shape[0]
        if n_atoms < 1:
            raise ValueError(f"{self.source}: an AOTInductor package needs at least one atom, got {n_atoms}")
        if not 0 <= int(n_local) <= n_atoms:
            raise ValueError(f"n_local must lie in 0 .. {n_atoms} (the number of atoms), got {n_local}")
        local = pos.new_empty((int(n_local), 0))
        atom_energy, forces, virial, atom_virial = self._run(
            [pos.contiguous(), atom_type.contiguous(), edge_index.contiguous(), edge_shift.contiguous(), local])
        if not compute_atom_virial:
            atom_virial = atom_virial[:0]
        return atom_energy, forces, virial, atom_virial

    def __reduce__(self):
        return _restore_module, (self.package.data, self.source)


#: Most copies of a CPU package's program state ``_overlapping_runner`` keeps (one per usable core up to this): calls
#: beyond it wait for a free one.
MAX_PACKAGE_RUNNERS = 64


def _overlapping_runner(path: Path):
    """``run(inputs) -> outputs`` of the CPU package at ``path`` through ``torch.classes.mdpot.PackageRunner``
    (libmdpot_ops.so), whose calls release Python's lock and hold one copy of the program's state per usable core
    (at most ``MAX_PACKAGE_RUNNERS``), so that calls from as many threads overlap (the calculator's chunks); None
    when that library is not built (then torch's own loader runs the package, one call at a time). The program's
    flat inputs and outputs are the contract's five tensors and four tensors."""
    from ..lammps.run import usable_cores
    from ..ops import load_ops

    if not load_ops(build=False, required=False):
        return None
    try:
        cls = torch.classes.mdpot.PackageRunner
    except RuntimeError:  # a library built before the class
        return None
    runner = cls(str(path), c.AOTI_PROGRAM, min(usable_cores(), MAX_PACKAGE_RUNNERS))
    return runner.run


def _restore_module(data: bytes, source: str) -> AOTIModule:
    return AOTIModule(check_package(data, source, torch.device("cpu")), source)


def load_package(data: bytes, source: str, device: torch.device) -> AOTIModule:
    """Check the package content ``data`` (:func:`check_package`), then load its program."""
    return AOTIModule(check_package(data, source, device), source)

