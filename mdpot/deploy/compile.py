"""Deploying: compile to TorchScript, check the compiled model against the eager one, write the file atomically."""
from __future__ import annotations

import copy
import dataclasses
import datetime
import io
import os
import pickletools
import re
import struct
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .._files import atomic_write, sha256_file
from ..data import TypeMapper, atoms_to_graph
from ..models import contract_potential, load_checkpoint
from ..testing.asserts import assert_allclose, compare_contract
from ..testing.contract import CONTRACT_OUTPUTS
from ..testing.structures import alloy, close_contacts, sample_structure
from ..testing.tolerances import dtype_name, tolerance
from . import aoti
from . import metadata as md
from .load import LoadedModel, load_model, weights_digest
from .memory import bytes_per_edge

PathLike = Union[str, os.PathLike]


class SelfCheckError(RuntimeError):
    """The compiled model disagreed with the eager model; nothing was written."""


def eager_model(model: nn.Module, dtype: Union[str, torch.dtype] = "float64",
                provenance: Optional[Mapping[str, Any]] = None, path: Optional[PathLike] = None) -> LoadedModel:
    """An eager ``Potential`` of a copy of ``model`` (energy model or ``Potential``) in ``dtype``, with the
    metadata a deploy would write: for tests and in-process use without a deployed file. A message-passing model
    gets a ``MessagePassingPotential`` (the block-by-block methods of ``docs/message_passing_exchange.md``). ``path`` records where
    the weights came from (a checkpoint), if anywhere."""
    dtype = dtype_name(dtype)
    energy = copy.deepcopy(md.energy_model_of(model)).to(getattr(torch, dtype)).eval()
    return LoadedModel(contract_potential(energy).eval(), md.make_metadata(energy, dtype, provenance),
                       None if path is None else Path(path))


def self_check(compiled: nn.Module, eager: nn.Module, elements: Sequence[str], r_max: float, dtype: str,
               seed: int = 0) -> Dict[str, float]:
    """Compare ``compiled`` with ``eager`` on a sample structure (row 1 of ``docs/testing.md``).

    Returns the max errors per quantity; raises ``SelfCheckError`` naming the quantity, max error, tolerance
    and magnitude. A model with a short-range repulsion is checked with close pairs in the structure, where the
    term is not zero.
    """
    atoms = sample_structure(elements, r_max, seed=seed)
    if getattr(eager, "has_repulsion", False):
        atoms = close_contacts(atoms, seed=seed)
    graph = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    try:
        return compare_contract(compiled, eager, graph, dtype, what="self-check")
    except AssertionError as exc:
        raise SelfCheckError(f"compiled model does not match the eager model: {exc}") from None


def self_check_ghosts(compiled: nn.Module, eager: nn.Module, elements: Sequence[str], r_max: float, dtype: str,
                      seed: int = 1) -> Dict[str, float]:
    """Compare ``compiled`` with ``eager`` (row 1 tolerances, every output) on a second structure, of another size
    than :func:`self_check`'s, with a third of its atoms taken as ghosts (``n_local < N``): catches a compiled
    program specialised to the shapes it was traced with."""
    atoms = alloy(elements, (3, 2, 2), a=min(3.8, 0.75 * r_max), seed=seed)
    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    n_local = 2 * g.num_atoms // 3
    tol = tolerance("deploy", dtype)
    got = compiled(g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, True)
    want = eager(g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, True)
    try:
        return {name: assert_allclose(a.detach(), b.detach(), tol, f"self-check with ghosts {name}")
                for name, a, b in zip(CONTRACT_OUTPUTS, got, want)}
    except AssertionError as exc:
        raise SelfCheckError(f"compiled model does not match the eager model: {exc}") from None


def deploy_model(model: nn.Module, path: PathLike, dtype: Union[str, torch.dtype] = "float64",
                 provenance: Optional[Mapping[str, Any]] = None, overwrite: bool = False,
                 format: str = aoti.DEFAULT_FORMAT, cpu_isa: str = "native",
                 aoti_threads: str = "dynamic", kernels: Optional[str] = None) -> LoadedModel:
    """Compile ``model`` (an energy model or ``Potential``) in ``dtype`` and write it to ``path``.

    ``format``: ``"torchscript"`` (format version 2; 4 for a message-passing model with a short-range repulsion,
    whose block interface then includes the pair term) or ``"aoti"``, an AOTInductor package (format version 3, or
    6 with the fused kernels, ``docs/contract.md``) of native code for this machine's CPU, or for an older one with
    ``cpu_isa`` (``"avx2"``, ``"avx512"``; packages only). ``aoti_threads``: a package's loops follow the running
    thread count (``"dynamic"``) or are single-threaded (``"serial"``: fastest with one thread per MPI rank; its
    scatters are plain adds, a dynamic package's atomic ones). Compiling a package takes tens of seconds (mostly the
    C++ compiler).

    ``kernels``: ``"fused"``: the tensor products call mdpot's fused C++ operators (:mod:`mdpot.ops`), format
    version ``FUSED_FORMAT_VERSION`` (8) for TorchScript, ``AOTI_FUSED_FORMAT_VERSION`` (6) for a package, which
    load wherever ``libmdpot_ops.so`` is built (it is built with the LAMMPS plugin); or ``"reference"`` (pure torch;
    the lowest format version that describes the model, readable by older mdpot). ``None`` (default):
    :func:`mdpot.contract.default_kernels` of ``format``. The self-check compares a fused file with the reference
    eager model.

    The metadata records the memory of one model call per edge, measured on a probe graph (``bytes_per_edge``,
    :mod:`mdpot.deploy.memory`; for a package, of the eager model it is compiled from). The file is written only
    after the compiled model, loaded back from disk, matched the eager model on a
    sample structure within the tolerances of row 1 of ``docs/testing.md`` (a package also on a second structure
    of another size, with ghost atoms); otherwise ``SelfCheckError`` is raised and nothing is left at ``path``.
    It is written through a temporary file ``.NAME.PID@HOST.tmp`` (:func:`mdpot._files.atomic_write`); those of
    earlier deploys to ``path`` that were killed are removed. Returns the deployed model as loaded from ``path``.

    Example
    -------
    >>> from mdpot.models import AllegroConfig, build_model
    >>> deployed = deploy_model(build_model(AllegroConfig(elements=("Cu",))), "cu.pt", dtype="float32")
    """
    if format not in aoti.FORMATS:
        raise ValueError(f"unknown deploy format {format!r}; expected one of {list(aoti.FORMATS)}")
    if cpu_isa not in aoti.CPU_ISAS:
        raise ValueError(f"unknown cpu_isa {cpu_isa!r}; expected one of {list(aoti.CPU_ISAS)}")
    if cpu_isa != "native" and format != "aoti":
        raise ValueError(f"cpu_isa {cpu_isa!r} applies to AOTInductor packages only (format 'aoti'), not {format!r}")
    if aoti_threads not in aoti.AOTI_THREADS:
        raise ValueError(f"unknown aoti_threads {aoti_threads!r}; expected one of {list(aoti.AOTI_THREADS)}")
    if kernels is None:
        kernels = md.default_kernels(format)
    if kernels not in md.KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; expected one of {list(md.KERNELS)}")
    if aoti_threads != "dynamic" and format != "aoti":
        raise ValueError(f"aoti_threads {aoti_threads!r} applies to AOTInductor packages only (format 'aoti'), "
                         f"not {format!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path.resolve()} exists; pass overwrite=True (CLI: --force) to replace it")
    eager = eager_model(model, dtype, provenance)
    meta = eager.metadata
    module = eager.module
    if kernels == "fused":
        # the file calls the fused operators; `eager` keeps the reference, which the self-check compares against
        from ..ops import set_kernels

        module = copy.deepcopy(eager.module)
        # a package keeps NequIP's radial network per edge (the shared table's lengths are data-dependent)
        set_kernels(module, "fused", shared_radial=format != "aoti")
        meta = md.make_metadata(md.energy_model_of(module), meta[md.MODEL_DTYPE], meta[md.PROVENANCE], kernels)
    if format == "aoti":
        return _deploy_package(module, eager, meta, path, cpu_isa, aoti_threads)
    compiled = torch.jit.script(module)
    meta[md.WEIGHTS_SHA256] = weights_digest(compiled)
    meta[md.BYTES_PER_EDGE] = bytes_per_edge(compiled, meta[md.ELEMENTS], meta[md.R_MAX])
    with atomic_write(path) as tmp:
        tmp.write_bytes(save_bytes(compiled, meta))
        loaded = load_model(tmp)
        self_check(loaded.module, eager.module, meta[md.ELEMENTS], meta[md.R_MAX], meta[md.MODEL_DTYPE])
    return dataclasses.replace(loaded, path=path)


def _deploy_package(module: nn.Module, eager: LoadedModel, meta: Mapping[str, Any], path: Path, cpu_isa: str,
                    threads: str) -> LoadedModel:
    """Compile the contract module ``module`` (the reference ``eager.module``, or a copy calling the fused
    kernels, as ``meta`` says) into a package at ``path``, checked against the reference ``eager.module``."""
    meta = dict(meta)
    elements, r_max, dtype = meta[md.ELEMENTS], meta[md.R_MAX], meta[md.MODEL_DTYPE]
    meta[md.BYTES_PER_EDGE] = bytes_per_edge(module, elements, r_max)  # of the eager model it compiles
    atoms = sample_structure(elements, r_max, seed=0)
    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    # n_local < N in the example, so that nothing is traced as if every atom were local
    local = torch.empty((max(g.num_atoms - 1, 0), 0), dtype=torch.float64)
    data, target = aoti.compile_program(module, (g.pos, g.atom_type, g.edge_index, g.edge_shift, local),
                                        cpu_isa=cpu_isa, threads=threads)
    fused = meta[md.KERNELS_KEY] == "fused"
    meta[md.FORMAT_VERSION_KEY] = md.AOTI_FUSED_FORMAT_VERSION if fused else md.AOTI_FORMAT_VERSION
    meta[md.WEIGHTS_SHA256] = aoti.package_digest(data)
    with atomic_write(path) as tmp:
        tmp.write_bytes(aoti.package_bytes(data, meta, target))
        loaded = load_model(tmp)
        self_check(loaded.module, eager.module, elements, r_max, dtype)
        self_check_ghosts(loaded.module, eager.module, elements, r_max, dtype)
    return dataclasses.replace(loaded, path=path)


def save_bytes(module: torch.jit.ScriptModule, meta: Mapping[str, Any]) -> bytes:
    """The file of a scripted ``module`` with ``meta`` as its extra files, holding no absolute path of this machine.

    Serialised in memory, so the archive's inner folder is "archive" and not the name of the temporary file it is
    written through (pid and host). TorchScript keeps, for its error tracebacks, the absolute path of every
    Python source file it compiled (``code/**.debug_pkl``); those become paths relative to the ``sys.path``
    entry holding them (``mdpot/models/allegro.py``, ``torch/nn/functional.py``), or the bare file name.
    """
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=md.encode(meta))
    reader = torch._C.PyTorchFileReader(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for name in reader.get_all_records():
        data = bytes(reader.get_record(name))
        if name.endswith(".debug_pkl"):
            data = _portable_pickle(data)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return out.getvalue()


def _source_name(filename: str) -> str:
    """A Python source file's path relative to the ``sys.path`` entry it lies in (else its name)."""
    if not os.path.isabs(filename):
        return filename
    best = None
    for entry in sys.path:
        entry = os.path.abspath(entry or os.curdir)
        rel = os.path.relpath(filename, entry)
        if not rel.startswith(os.pardir) and (best is None or len(rel) < len(best)):
            best = rel
    return Path(best).as_posix() if best is not None else os.path.basename(filename)


#: An absolute path of a Python source inside a string: a file name, or a traced module's recorded stack
#: ("/…/e3nn/util/jit.py(169): compile"). Not the tail of a URL or of a relative path.
_SOURCE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s\"'()<>:,;]*?\.py(?![\w.])")


def _portable_pickle(data: bytes) -> bytes:
    """``data`` (a TorchScript source-range pickle) with every absolute ``.py`` path in its strings made relative.
    The pickle is rewritten op by op, only those strings changing: it holds int lists that only TorchScript's own
    unpickler builds, so it cannot go through Python's pickle."""
    ops = list(pickletools.genops(data))
    out = bytearray()
    for k, (op, arg, pos) in enumerate(ops):
        end = ops[k + 1][2] if k + 1 < len(ops) else len(data)
        if op.name == "BINUNICODE" and ".py" in arg:
            text = _SOURCE_PATH.sub(lambda m: _source_name(m.group(0)), arg)
            if text != arg:
                raw = text.encode("utf-8")
                out += b"X" + struct.pack("<I", len(raw)) + raw
                continue
        out += data[pos:end]
    return bytes(out)


def deploy_checkpoint(checkpoint: PathLike, out: PathLike, dtype: Union[str, torch.dtype] = "float64",
                      overwrite: bool = False, format: str = aoti.DEFAULT_FORMAT,
                      cpu_isa: str = "native", aoti_threads: str = "dynamic",
                      kernels: Optional[str] = None) -> LoadedModel:
    """Deploy the model of training checkpoint ``checkpoint`` to ``out`` in ``dtype`` and ``format`` (see
    :func:`deploy_model`).

    The provenance stored in the file is the checkpoint's own (``extra["provenance"]``: how it was trained or
    initialised, its run folder relative to the working directory it ran in) plus the checkpoint's file name,
    SHA-256 and creation time and the time of this deploy. No absolute path of this machine is recorded.

    Example
    -------
    >>> prov = deploy_checkpoint("runs/cu/best.ckpt", "cu.pt", dtype="float32").metadata["provenance"]
    >>> prov["checkpoint"], prov["run_dir"]
    ('best.ckpt', 'runs/cu')
    """
    dtype = dtype_name(dtype)
    model, payload = load_checkpoint(checkpoint, dtype=getattr(torch, dtype))
    provenance = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "checkpoint": Path(checkpoint).name, "checkpoint_sha256": sha256_file(checkpoint),
                  "checkpoint_created": payload.get("created")}
    provenance.update(payload.get("extra", {}).get("provenance", {}))
    return deploy_model(model, out, dtype=dtype, provenance=provenance, overwrite=overwrite, format=format,
                        cpu_isa=cpu_isa, aoti_threads=aoti_threads, kernels=kernels)
