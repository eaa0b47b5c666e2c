"""Loading deployed models: the file checks, the metadata and the weights digest."""
from __future__ import annotations

import copy
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from . import metadata as md

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate: the contract module (TorchScript or eager ``Potential``) and its metadata.

    Frozen: :meth:`to` gives a copy on another device instead of moving this one.

    Attributes
    ----------
    module : nn.Module
        The contract module, ``forward(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)``
        (see ``docs/contract.md``).
    metadata : dict
        Typed metadata (:mod:`mdpot.deploy.metadata`).
    path : Path or None
        The file it was loaded from (``None`` for an in-memory eager model).
    device : torch.device
        Where ``module`` lives.

    Example
    -------
    >>> model = load_model("cu.pt")
    >>> model.elements, model.r_max
    (('Cu',), 5.0)
    """

    module: nn.Module
    metadata: Dict[str, Any]
    path: Optional[Path] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def elements(self) -> Tuple[str, ...]:
        """Chemical symbols in model type order."""
        return self.metadata[md.ELEMENTS]

    @property
    def r_max(self) -> float:
        """Neighbour cutoff, Å."""
        return self.metadata[md.R_MAX]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def to(self, device: Union[str, torch.device]) -> "LoadedModel":
        """This model on ``device``: itself if it is already there, otherwise a copy (this one is not moved)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return LoadedModel(copy.deepcopy(self.module).to(device), dict(self.metadata), self.path, device)

    def __call__(self, pos, atom_type, edge_index, edge_shift, n_local: int, compute_atom_virial: bool = False):
        # TorchScript's profiling optimiser measured slower on CPU and re-specialises whenever N or E change.
        with torch.jit.optimized_execution(False):
            return self.module(pos, atom_type, edge_index, edge_shift, n_local, compute_atom_virial)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes): detects a modified file."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Load a deployed model onto ``device``, checking every metadata key and the weights digest.

    Loading has no process-wide side effects; the ASE calculator tunes malloc for speed itself
    (:class:`mdpot.MDPotCalculator`, ``tune_malloc``).

    Raises ``FileNotFoundError`` (with the resolved path) or ``ValueError`` naming what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path.resolve()}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an mdpot model (not a TorchScript archive; truncated or corrupt?)")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    extra = {k: "" for k in md.ALL_KEYS}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError and friends for damaged archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a loadable mdpot model ({first})") from None
    raw = {k: v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for k, v in extra.items()}
    meta = md.decode(raw, str(path))
    digest = weights_digest(module)
    if digest != meta[md.WEIGHTS_SHA256]:
        raise ValueError(f"{path}: weights do not match the digest recorded at deploy "
                         f"({digest[:12]}… != {meta[md.WEIGHTS_SHA256][:12]}…): the file was modified after `mdpot deploy`")
    module.eval()
    return LoadedModel(module, meta, path, device)
