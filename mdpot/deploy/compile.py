"""Deploying: compile to TorchScript, check the compiled model against the eager one, write the file atomically."""
from __future__ import annotations

import copy
import dataclasses
import datetime
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..data import TypeMapper, atoms_to_graph
from ..models import Potential, load_checkpoint
from ..testing.asserts import compare_contract
from ..testing.structures import sample_structure
from ..testing.tolerances import dtype_name
from . import metadata as md
from .load import LoadedModel, load_model, weights_digest

PathLike = Union[str, os.PathLike]


class SelfCheckError(RuntimeError):
    """The compiled model disagreed with the eager model; nothing was written."""


def eager_model(model: nn.Module, dtype: Union[str, torch.dtype] = "float64",
                provenance: Optional[Mapping[str, Any]] = None, path: Optional[PathLike] = None) -> LoadedModel:
    """An eager ``Potential`` of a copy of ``model`` (energy model or ``Potential``) in ``dtype``, with the
    metadata a deploy would write: for tests and in-process use without a deployed file. ``path`` records where
    the weights came from (a checkpoint), if anywhere."""
    dtype = dtype_name(dtype)
    energy = copy.deepcopy(md.energy_model_of(model)).to(getattr(torch, dtype)).eval()
    return LoadedModel(Potential(energy).eval(), md.make_metadata(energy, dtype, provenance),
                       None if path is None else Path(path))


def self_check(compiled: nn.Module, eager: nn.Module, elements: Sequence[str], r_max: float, dtype: str,
               seed: int = 0) -> Dict[str, float]:
    """Compare ``compiled`` with ``eager`` on a sample structure (row 1 of ``docs/testing.md``).

    Returns the max errors per quantity; raises ``SelfCheckError`` naming the quantity, max error, tolerance
    and magnitude.
    """
    atoms = sample_structure(elements, r_max, seed=seed)
    graph = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    try:
        return compare_contract(compiled, eager, graph, dtype, what="self-check")
    except AssertionError as exc:
        raise SelfCheckError(f"compiled model does not match the eager model: {exc}") from None


def deploy_model(model: nn.Module, path: PathLike, dtype: Union[str, torch.dtype] = "float64",
                 provenance: Optional[Mapping[str, Any]] = None, overwrite: bool = False) -> LoadedModel:
    """Compile ``model`` (an energy model or ``Potential``) to TorchScript in ``dtype`` and write it to ``path``.

    The file is written only after the compiled model, loaded back from disk, matched the eager model on a
    sample structure within the tolerances of row 1 of ``docs/testing.md``; otherwise ``SelfCheckError`` is
    raised and nothing is left at ``path``. Returns the deployed model as loaded from ``path``.

    Example
    -------
    >>> from mdpot.models import AllegroConfig, build_model
    >>> deployed = deploy_model(build_model(AllegroConfig(elements=("Cu",))), "cu.pt", dtype="float32")
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path.resolve()} exists; pass overwrite=True (CLI: --force) to replace it")
    eager = eager_model(model, dtype, provenance)
    meta = eager.metadata
    compiled = torch.jit.script(eager.module)
    meta[md.WEIGHTS_SHA256] = weights_digest(compiled)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.jit.save(compiled, str(tmp), _extra_files=md.encode(meta))
        loaded = load_model(tmp)
        self_check(loaded.module, eager.module, meta[md.ELEMENTS], meta[md.R_MAX], meta[md.MODEL_DTYPE])
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dataclasses.replace(loaded, path=path)


def deploy_checkpoint(checkpoint: PathLike, out: PathLike, dtype: Union[str, torch.dtype] = "float64",
                      overwrite: bool = False) -> LoadedModel:
    """Deploy the model of training checkpoint ``checkpoint`` to ``out`` in ``dtype`` (see :func:`deploy_model`).

    The provenance stored in the file is the checkpoint's own (``extra["provenance"]``: how it was trained or
    initialised) plus the checkpoint's resolved path and creation time and the time of this deploy.

    Example
    -------
    >>> deploy_checkpoint("runs/cu/best.ckpt", "cu.pt", dtype="float32").metadata["provenance"]["checkpoint"]
    '/home/me/runs/cu/best.ckpt'
    """
    dtype = dtype_name(dtype)
    model, payload = load_checkpoint(checkpoint, dtype=getattr(torch, dtype))
    provenance = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_created": payload.get("created")}
    provenance.update(payload.get("extra", {}).get("provenance", {}))
    return deploy_model(model, out, dtype=dtype, provenance=provenance, overwrite=overwrite)
