"""Committee files: K models behind one contract (format version 7, ``docs/contract.md``, "Committee files").

``forward`` is the model contract with the members' **mean** outputs, so every loader that runs a single model runs
a committee's mean dynamics unchanged; ``committee_forward`` returns each member's outputs stacked on a leading axis
of K, on the same graph (every row, ghosts included), from which the ASE calculator and ``mdpot select`` form the
spread. Members must agree on what the contract and the engines need of a model (:func:`check_members`).
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._files import atomic_write, sha256_file
from ..data import TypeMapper, atoms_to_graph
from ..testing.asserts import assert_allclose
from ..testing.contract import CONTRACT_OUTPUTS
from ..testing.structures import alloy
from ..testing.tolerances import dtype_name, tolerance
from . import metadata as md
from .load import LoadedModel, load_model, weights_digest

PathLike = Union[str, os.PathLike]
Member = Union[PathLike, nn.Module]

#: What members must share, in the order they are compared: (metadata key, how a message names it).
SHARED: Tuple[Tuple[str, str], ...] = ((md.ELEMENTS, "elements"), (md.R_MAX, "r_max"),
                                       (md.RECEPTIVE_FIELD, "receptive_field"), (md.ARCHITECTURE, "architecture"),
                                       (md.NUM_LAYERS, "num_layers"), (md.MODEL_DTYPE, "dtype"))


class CommitteePotential(nn.Module):
    """K contract modules evaluated on one graph.

    ``forward(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)`` is the model contract
    (``docs/contract.md``) with the mean of the members' outputs: per-atom energies ``[n_local]`` eV, forces
    ``[N, 3]`` eV/Å, virial ``[3, 3]`` eV, per-atom virial ``[N, 3, 3]`` or ``[0, 3, 3]`` eV. The mean is formed as
    ``x_0 + mean_k (x_k - x_0)``, so identical members give member 0's outputs exactly.

    ``committee_forward`` (same arguments) returns the members' outputs stacked: ``[K, n_local]``, ``[K, N, 3]``,
    ``[K, 3, 3]``, ``[K, N, 3, 3]`` or ``[K, 0, 3, 3]``, float64, members in the order given.

    Example
    -------
    >>> from mdpot.models import contract_potential
    >>> committee = CommitteePotential([contract_potential(a), contract_potential(b)])
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < md.MIN_COMMITTEE_SIZE:
            raise ValueError(f"a committee needs at least {md.MIN_COMMITTEE_SIZE} members, got {len(members)}; "
                             "deploy a single model as an ordinary file")
        self.members = nn.ModuleList(members)
        self.size: int = len(members)
        self.has_repulsion: bool = any(bool(getattr(m, "has_repulsion", False)) for m in members)

    @torch.jit.export
    def committee_size(self) -> int:
        return self.size

    @torch.jit.export
    def committee_forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor,
                          edge_shift: torch.Tensor, n_local: int, compute_atom_virial: bool
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        energies: List[torch.Tensor] = []
        forces: List[torch.Tensor] = []
        virials: List[torch.Tensor] = []
        atom_virials: List[torch.Tensor] = []
        for member in self.members:
            e, f, w, aw = member(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)
            energies.append(e)
            forces.append(f)
            virials.append(w)
            atom_virials.append(aw)
        return torch.stack(energies), torch.stack(forces), torch.stack(virials), torch.stack(atom_virials)

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                n_local: int, compute_atom_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        e, f, w, aw = self.committee_forward(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)
        return committee_mean(e), committee_mean(f), committee_mean(w), committee_mean(aw)


def committee_mean(stacked: torch.Tensor) -> torch.Tensor:
    """Mean over the leading (member) axis as ``x_0 + mean_k (x_k - x_0)``: exactly ``x_0`` for identical members."""
    first = stacked[0]
    return first + (stacked - first.unsqueeze(0)).mean(0)


def check_members(metas: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """``ValueError`` unless every member's metadata agrees with member 0's on ``SHARED`` (elements in the same
    order, r_max, receptive field, architecture, num_layers, dtype), and there are at least two members. The
    message names the member and both values."""
    if len(metas) < md.MIN_COMMITTEE_SIZE:
        raise ValueError(f"a committee needs at least {md.MIN_COMMITTEE_SIZE} members, got {len(metas)}"
                         + (f" ({names[0]})" if names else "") + "; use a single model file for one model")
    for k in range(1, len(metas)):
        for key, label in SHARED:
            a, b = metas[0][key], metas[k][key]
            if a != b:
                show = (lambda v: " ".join(v)) if key == md.ELEMENTS else str
                raise ValueError(f"committee member {k} ({names[k]}) has {label} {show(b)}, member 0 ({names[0]}) "
                                 f"has {show(a)}: members must share elements (in the same order), r_max, "
                                 "receptive field, architecture, num_layers and dtype")


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a model config as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def _member_eager(member: Member, dtype: str) -> Tuple[LoadedModel, str]:
    """A member as an eager reference-kernel ``LoadedModel`` with its provenance, and its name for messages."""
    from ..models import load_checkpoint
    from .compile import eager_model

    if isinstance(member, nn.Module):
        return eager_model(member, dtype), type(md.energy_model_of(member)).__name__
    if not isinstance(member, (str, os.PathLike)):
        raise TypeError(f"a committee member must be a checkpoint path or an mdpot model, got {type(member).__name__}")
    path = Path(member)
    model, payload = load_checkpoint(path, dtype=getattr(torch, dtype))
    provenance = {"checkpoint": path.name, "checkpoint_sha256": sha256_file(path),
                  "checkpoint_created": payload.get("created")}
    provenance.update(payload.get("extra", {}).get("provenance", {}))
    return eager_model(model, dtype, provenance, path), str(path)


def deploy_committee(members: Sequence[Member], path: PathLike, dtype: Union[str, torch.dtype] = "float64",
                     overwrite: bool = False, kernels: Optional[str] = None) -> LoadedModel:
    """Deploy K >= 2 models (training checkpoints or energy models / ``Potential`` objects) as one committee file.

    The file is TorchScript of format version 7 (``COMMITTEE_FORMAT_VERSION``): a :class:`CommitteePotential` whose
    members are each the contract module :func:`~mdpot.deploy.deploy_model` compiles, in ``dtype``, calling the
    tensor-product ``kernels`` (``"fused"`` by default, as single files; ``"reference"``). Its metadata is a single
    file's (elements, cutoffs, ...; ``config`` and ``bytes_per_edge`` of the whole committee call are member 0's
    config and the committee's measurement) plus ``committee_size`` (K) and ``committee_members``: per member its
    provenance (a checkpoint's file name, SHA-256, creation time and training provenance with seed and run folder),
    ``config_sha256`` and ``weights_sha256``.

    Members must share elements (same order), r_max, receptive field, architecture, num_layers and dtype
    (:func:`check_members`); a single member is refused (deploy it as an ordinary file). The file is written only
    after it, loaded back, matched the eager reference members within row-1 tolerances: the mean outputs
    (``forward``) on a sample structure, and every member's outputs (``committee_forward``, per-atom virial
    included) on a second structure with a third of its atoms as ghosts; otherwise ``SelfCheckError``.

    Example
    -------
    >>> committee = deploy_committee(["runs/cu/member_0/best.ckpt", "runs/cu/member_1/best.ckpt"], "committee.pt")
    >>> committee.committee_size
    2
    """
    from ..ops import set_kernels
    from .compile import SelfCheckError, save_bytes, self_check
    from .memory import bytes_per_edge

    dtype = dtype_name(dtype)
    kernels = md.DEFAULT_KERNELS if kernels is None else kernels
    if kernels not in md.KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; expected one of {list(md.KERNELS)}")
    members = list(members)
    if len(members) < md.MIN_COMMITTEE_SIZE:
        raise ValueError(f"a committee needs at least {md.MIN_COMMITTEE_SIZE} members, got {len(members)}; deploy a "
                         "single model with deploy_model / deploy_checkpoint (CLI: mdpot deploy MODEL.ckpt)")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path.resolve()} exists; pass overwrite=True (CLI: --force) to replace it")
    eagers, names = zip(*(_member_eager(m, dtype) for m in members))
    check_members([e.metadata for e in eagers], names)
    reference = CommitteePotential([e.module for e in eagers]).eval()
    module = reference
    if kernels == "fused":
        module = copy.deepcopy(reference)
        # version 7 files call the first operator set only: the members keep NequIP's radial network per edge
        set_kernels(module, "fused", shared_radial=False)
    compiled = torch.jit.script(module)
    described = []
    for k, eager in enumerate(eagers):
        entry = dict(eager.metadata[md.PROVENANCE])
        entry["config_sha256"] = config_digest(eager.metadata[md.CONFIG])
        # the digest the member has deployed alone (of its scripted module, as `weights_sha256` of a single file)
        entry["weights_sha256"] = weights_digest(getattr(compiled.members, str(k)))
        described.append(entry)
    meta = dict(eagers[0].metadata)
    meta.update({md.FORMAT_VERSION_KEY: md.COMMITTEE_FORMAT_VERSION, md.KERNELS_KEY: kernels,
                 md.PROVENANCE: {"kind": "committee", "created": datetime.datetime.now(datetime.timezone.utc)
                                 .isoformat(timespec="seconds")},
                 md.COMMITTEE_SIZE: len(eagers), md.COMMITTEE_MEMBERS: described})
    meta[md.WEIGHTS_SHA256] = weights_digest(compiled)
    meta[md.BYTES_PER_EDGE] = bytes_per_edge(compiled, meta[md.ELEMENTS], meta[md.R_MAX])
    with atomic_write(path) as tmp:
        tmp.write_bytes(save_bytes(compiled, meta))
        loaded = load_model(tmp)
        self_check(loaded.module, reference, meta[md.ELEMENTS], meta[md.R_MAX], dtype)
        try:
            check_committee_outputs(loaded.module, [e.module for e in eagers], meta[md.ELEMENTS], meta[md.R_MAX],
                                    dtype)
        except AssertionError as exc:
            raise SelfCheckError(f"compiled committee does not match the eager members: {exc}") from None
    return dataclasses.replace(loaded, path=path)


def check_committee_outputs(committee: nn.Module, members: Sequence[nn.Module], elements: Sequence[str],
                            r_max: float, dtype: str, seed: int = 1) -> Dict[str, float]:
    """Compare ``committee.committee_forward`` with each of ``members`` (row 1 tolerances, every output, per-atom
    virial included) on a small alloy with a third of its atoms as ghosts; ``AssertionError`` names the member and
    quantity. Returns the max errors per quantity over the members."""
    atoms = alloy(elements, (3, 2, 2), a=min(3.8, 0.75 * r_max), seed=seed)
    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    n_local = 2 * g.num_atoms // 3
    tol = tolerance("deploy", dtype)
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, True)
    with torch.jit.optimized_execution(False):
        stacked = committee.committee_forward(*args)
        errors: Dict[str, float] = {}
        for k, member in enumerate(members):
            for name, got, want in zip(CONTRACT_OUTPUTS, (s[k] for s in stacked), member(*args)):
                err = assert_allclose(got.detach(), want.detach(), tol, f"committee member {k} {name}")
                errors[name] = max(errors.get(name, 0.0), err)
    return errors

