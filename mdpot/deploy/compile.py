"""Deploy (compile + self-check + write) and load mdpot models."""
from __future__ import annotations

import copy
import datetime
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .. import __version__
from .._malloc import tune_malloc
from ..data import TypeMapper, atoms_to_graph
from ..models import Potential
from ..models.config import ModelConfig
from ..testing.asserts import assert_allclose
from ..testing.structures import sample_structure
from ..testing.tolerances import dtype_name, tolerance
from . import metadata as md

PathLike = Union[str, os.PathLike]


class SelfCheckError(RuntimeError):
    """The compiled model disagreed with the eager model; nothing was written."""


@dataclass
class LoadedModel:
    """A model ready to evaluate: the contract module (TorchScript or eager ``Potential``) and its metadata."""

    module: nn.Module
    metadata: Dict[str, Any]
    path: Optional[Path] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def elements(self):
        return self.metadata[md.ELEMENTS]

    @property
    def r_max(self) -> float:
        return self.metadata[md.R_MAX]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

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


def _energy_model(model: nn.Module) -> nn.Module:
    if isinstance(model, Potential):
        model = model.model
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise TypeError(f"deploy needs an mdpot energy model (Allegro, NequIP) or Potential, got {type(model).__name__}")
    return model


def make_metadata(model: nn.Module, dtype: str, provenance: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Metadata of ``model`` as it will be stored (weights digest filled in at deploy)."""
    config: ModelConfig = _energy_model(model).config
    return {
        md.FORMAT_VERSION_KEY: md.FORMAT_VERSION,
        md.ARCHITECTURE: config.architecture,
        md.ELEMENTS: tuple(config.elements),
        md.R_MAX: float(config.r_max),
        md.NUM_LAYERS: int(config.num_layers),
        md.RECEPTIVE_FIELD: float(config.receptive_field),
        md.MODEL_DTYPE: dtype,
        md.ENERGY_UNITS: "eV",
        md.LENGTH_UNITS: "Å",
        md.TORCH_VERSION: torch.__version__,
        md.MDPOT_VERSION: __version__,
        md.PROVENANCE: dict(provenance or {}),
        md.CONFIG: config.to_dict(),
        md.WEIGHTS_SHA256: "",
    }


def eager_model(model: nn.Module, dtype: Union[str, torch.dtype] = "float64",
                provenance: Optional[Mapping[str, Any]] = None) -> LoadedModel:
    """An eager ``Potential`` of ``model`` in ``dtype`` with the metadata a deploy would write (for tests and
    in-process use without a file)."""
    dtype = dtype_name(dtype)
    energy = copy.deepcopy(_energy_model(model)).to(getattr(torch, dtype)).eval()
    return LoadedModel(Potential(energy).eval(), make_metadata(energy, dtype, provenance))


def self_check(compiled: nn.Module, eager: nn.Module, elements, r_max: float, dtype: str, seed: int = 0) -> Dict[str, float]:
    """Compare ``compiled`` with ``eager`` on a sample structure (TEST_MATRIX row 1). Returns max errors;
    raises ``SelfCheckError`` naming the quantity, max error, tolerance and magnitude."""
    atoms = sample_structure(elements, r_max, seed=seed)
    g = atoms_to_graph(atoms, r_max, TypeMapper(elements))
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, True)
    expected = eager(*args)
    actual = compiled(*args)
    tol = tolerance("deploy", dtype)
    errors = {}
    for name, a, b in zip(("per-atom energy", "forces", "virial", "per-atom virial"), actual, expected):
        try:
            assert_allclose(a, b, tol, f"self-check {name}")
        except AssertionError as exc:
            raise SelfCheckError(f"compiled model does not match the eager model: {exc}") from None
        errors[name] = float((a - b).abs().max()) if a.numel() else 0.0
    try:
        assert_allclose(actual[0].sum(), expected[0].sum(), tol, "self-check total energy")
    except AssertionError as exc:
        raise SelfCheckError(f"compiled model does not match the eager model: {exc}") from None
    return errors


def deploy_model(model: nn.Module, path: PathLike, dtype: Union[str, torch.dtype] = "float64",
                 provenance: Optional[Mapping[str, Any]] = None, overwrite: bool = False) -> LoadedModel:
    """Compile ``model`` (an energy model or ``Potential``) to TorchScript in ``dtype`` and write it to ``path``.

    The file is written only after the compiled model, loaded back from disk, matched the eager model on a
    sample structure within TEST_MATRIX row 1 tolerances; otherwise ``SelfCheckError`` is raised and
    nothing is left at ``path``. Returns the loaded deployed model.

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
    loaded.path = path
    return loaded


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Load a deployed model, checking every metadata key and the weights digest.

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
    tune_malloc()
    return LoadedModel(module, meta, path, device)


def provenance_now(**info: Any) -> Dict[str, Any]:
    out = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out.update(info)
    return out
