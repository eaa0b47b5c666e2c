"""Deploy models of the ``nequip`` package (NequIP, Allegro) as ordinary mdpot model files (``mdpot deploy SOURCE``).

Facts this module relies on (established against nequip 0.19.1 / nequip-allegro 0.8.3, see the tests):

- A nequip TorchScript file (``*.nequip.pth``) is a ``torch.jit.save`` archive whose root module is
  ``GraphModel`` (pickled class ``__torch__.nequip.nn.graph_model[...].GraphModel``) with the extra files
  ``r_max``, ``type_names``, ``model_dtype`` (and ``num_types``, ``allow_tf32``, optionally
  ``per_edge_type_cutoff``). It loads without nequip installed.
- ``GraphModel.model`` is ``ForceStressOutput`` and ``GraphModel.model.func`` is the energy model without
  derivatives. Given a dict with ``pos``, ``atom_types``, ``edge_index`` and float64 ``edge_vectors``, the energy
  model uses the given vectors as they are (it only computes them from ``pos``/``cell`` when absent) and
  returns ``atomic_energy`` ``[N, 1]`` float64 for float32 and float64 models alike; the model casts to its
  own dtype inside. So ``dE/dr_ij`` per edge is one autograd call away, and forces, the virial and the exact
  per-atom virial follow as in :class:`mdpot.models.Potential`.
- (The full ``GraphModel`` given ``edge_vectors`` returns ``edge_forces = dE_total/dr_ij`` and no forces or
  stress; ``E_total`` sums every atom's energy, ghosts included, so it is not what the contract needs.)
- ``edge_index[0]`` is the centre (nequip scatters messages and Allegro pair energies onto it) and nequip forms
  ``r_ij = pos[j] - pos[i] + S_ij @ cell``. :func:`deploy_nequip` confirms both numerically before writing.
- Layers: NequIP's energy model has one ``ConvNetLayer`` child per message-passing layer; Allegro's has one
  ``Allegro_Module`` child with an integer attribute ``num_layers``. nequip's metadata has no layer count.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pickletools
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..deploy import metadata as md
from ..models.potential import edge_derivatives

PathLike = Union[str, os.PathLike]

#: Source kinds :func:`detect_source_kind` reports.
MDPOT = "mdpot"
NEQUIP_TORCHSCRIPT = "nequip-torchscript"
NEQUIP_CHECKPOINT = "nequip-checkpoint"
NEQUIP_PACKAGE = "nequip-package"
MDPOT_CHECKPOINT = "mdpot-checkpoint"

#: Extra files a nequip TorchScript model must carry.
NEQUIP_REQUIRED_KEYS = ("r_max", "type_names", "model_dtype")

INSTALL_HINT = "pip install -c constraints.txt nequip==0.19.1 nequip-allegro==0.8.3"

KIND_LABELS = {MDPOT: "mdpot model", MDPOT_CHECKPOINT: "mdpot checkpoint", NEQUIP_TORCHSCRIPT: "nequip TorchScript model",
               NEQUIP_CHECKPOINT: "nequip training checkpoint", NEQUIP_PACKAGE: "nequip packaged model (.nequip.zip)"}


class NequIPPotential(nn.Module):
    """A loaded nequip TorchScript ``GraphModel`` behind mdpot's contract forward (``docs/contract.md``).

    The edge vectors are formed here in float64 and handed to nequip's energy model (``model.model.func``),
    which casts them to the model's dtype itself, exactly as nequip's own path from positions does. Only the
    first ``n_local`` atomic energies are differentiated, so ghost atoms' energies never leak into forces.
    """

    def __init__(self, graph_model: nn.Module) -> None:
        super().__init__()
        self.nequip = graph_model

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                n_local: int, compute_atom_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        vec64 = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + edge_shift
        vec = vec64.detach().requires_grad_(True)
        data: Dict[str, torch.Tensor] = {
            "pos": pos.detach(), "atom_types": atom_type, "edge_index": edge_index, "edge_vectors": vec}
        out = self.nequip.model.func(data)
        atom_energy = out["atomic_energy"].reshape(-1)[:n_local].to(torch.float64)
        grad = torch.autograd.grad([atom_energy.sum()], [vec], allow_unused=True)[0]
        if grad is None:  # no edge reaches a local atom
            grad = torch.zeros_like(vec64)
        forces, virial, atom_virial = edge_derivatives(pos, vec64, grad.to(torch.float64), edge_index,
                                                       compute_atom_virial)
        return atom_energy.detach(), forces, virial, atom_virial


# --------------------------------------------------------------------------------------------------------------
# What is this file?


def _root_class(z: zipfile.ZipFile, names: List[str]) -> Optional[str]:
    """``module.Class`` of the object pickled in the archive's root ``data.pkl`` (read, never unpickled)."""
    roots = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not roots:
        return None
    head = z.read(roots[0])[:512]
    for op, arg, _ in pickletools.genops(head):
        if op.name in ("GLOBAL", "STACK_GLOBAL"):
            return str(arg).replace(" ", ".") if arg else None
        if op.name not in ("PROTO", "FRAME"):
            return None
    return None


def _pickle_strings(data: bytes, limit: int = 20000) -> List[str]:
    """String constants of a pickle stream, read with ``pickletools`` (nothing is executed)."""
    out: List[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                out.append(arg)
                if len(out) >= limit:
                    break
    except Exception:  # truncated or not a pickle: what was read so far is all we know
        pass
    return out


def detect_source_kind(path: PathLike, assume: Optional[str] = None) -> str:
    """The kind of model file at ``path``, from its content (never its name).

    ``assume="nequip"`` (CLI: ``--from nequip``) takes the archive's structure alone as enough: any TorchScript
    archive is read as a nequip TorchScript model, any ``torch.save`` archive as a nequip checkpoint and any
    ``torch.package`` archive as a nequip package, for files whose nequip markers this mdpot does not recognise
    (the wrapper's own checks still refuse what does not work). ``assume="mdpot"`` accepts only mdpot files.

    - ``"mdpot"``: a TorchScript archive with an ``extra/mdpot_format_version`` file, or an AOTInductor package
      (a deployed mdpot model);
    - ``"mdpot-checkpoint"``: a ``torch.save`` archive holding an ``mdpot_checkpoint`` payload;
    - ``"nequip-torchscript"``: a TorchScript archive whose root object is nequip's ``GraphModel``;
    - ``"nequip-checkpoint"``: a ``torch.save`` archive (no ``code/``) whose pickle holds the
      ``hyper_parameters -> info_dict`` of a nequip Lightning checkpoint;
    - ``"nequip-package"``: a ``torch.package`` archive (``.data/extern_modules``) holding nequip modules.

    Raises ``FileNotFoundError`` or a one-line ``ValueError`` for anything else.
    """
    path = Path(path)
    if assume not in (None, "mdpot", "nequip"):
        raise ValueError(f"source family must be mdpot or nequip, got {assume!r}")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected a model file (an mdpot checkpoint or a nequip model)")
    if not path.is_file():
        raise FileNotFoundError(f"model source not found: {path.resolve()}")
    kind = _detect(path, assume == "nequip")
    if assume is not None and not kind.startswith(assume):
        article = "an" if KIND_LABELS[kind].startswith("mdpot") else "a"
        raise ValueError(f"{path}: the content is {article} {KIND_LABELS[kind]}, not {'an' if assume == 'mdpot' else 'a'} "
                         f"{assume} file")
    return kind


def _detect(path: Path, nequip_structure_only: bool) -> str:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a zip archive; expected an mdpot checkpoint or model, a nequip TorchScript model (.nequip.pth), "
                         f"a nequip checkpoint (.ckpt) or a nequip package (.nequip.zip)")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        parts = [n.split("/") for n in names]
        if any(len(p) == 3 and p[1] == "extra" and p[2] == md.FORMAT_VERSION_KEY for p in parts):
            return MDPOT
        if any(len(p) >= 4 and p[1] == "data" and p[2] == "aotinductor" for p in parts):  # an mdpot .pt2 package
            return MDPOT
        is_script = any(len(p) >= 3 and p[1] == "code" for p in parts)
        root = _root_class(z, names)
        if is_script:
            if nequip_structure_only or (root and root.startswith("__torch__.nequip.nn.graph_model")
                                         and root.endswith(".GraphModel")):
                return NEQUIP_TORCHSCRIPT
            raise ValueError(f"{path}: a TorchScript archive that is neither an mdpot model (no extra/{md.FORMAT_VERSION_KEY}) "
                             f"nor a nequip model (root object {root or 'unknown'}, expected nequip's GraphModel)")
        if any(len(p) >= 3 and p[1] == ".data" and p[2] == "extern_modules" for p in parts):
            if nequip_structure_only or any(len(p) >= 3 and p[1] == "nequip" for p in parts):
                return NEQUIP_PACKAGE
            raise ValueError(f"{path}: a torch.package archive without nequip modules; not a nequip package (.nequip.zip)")
        pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if pkls:
            strings = set(_pickle_strings(z.read(pkls[0])))
            if "mdpot_checkpoint" in strings:
                return MDPOT_CHECKPOINT
            if nequip_structure_only:
                return NEQUIP_CHECKPOINT
            if {"hyper_parameters", "info_dict", "state_dict"} <= strings and any(s.startswith("nequip.") for s in strings):
                return NEQUIP_CHECKPOINT
            raise ValueError(f"{path}: a torch.save archive that is neither an mdpot checkpoint (no mdpot_checkpoint "
                             f"payload) nor a nequip training checkpoint (no hyper_parameters/info_dict of nequip's "
                             f"training module)")
    raise ValueError(f"{path}: a zip archive that is not a model file mdpot knows (no TorchScript code, torch.save "
                     f"pickle or torch.package data)")


def _mentions_allegro(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            if n.split("/")[1:2] == ["allegro"]:
                return True
            if n.count("/") == 1 and n.endswith("/data.pkl"):
                if any(s.startswith("allegro.") for s in _pickle_strings(z.read(n))):
                    return True
    return False


# --------------------------------------------------------------------------------------------------------------
# Metadata of a nequip TorchScript model


def _extra_keys(path: Path) -> List[str]:
    with zipfile.ZipFile(path) as z:
        return sorted({n.split("/")[2] for n in z.namelist() if n.count("/") == 2 and n.split("/")[1] == "extra"})


def load_nequip_torchscript(path: PathLike) -> Tuple[torch.jit.ScriptModule, Dict[str, str]]:
    """Load a nequip TorchScript file and every one of its extra files (as text). Needs no nequip."""
    path = Path(path)
    extra = {k: "" for k in _extra_keys(path)}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: nequip TorchScript model does not load ({first})") from None
    raw = {k: (v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)) for k, v in extra.items()}
    return module.eval(), raw


def _children(module: nn.Module) -> List[Tuple[str, nn.Module]]:
    return list(module.named_children())


def _kind(module: nn.Module) -> str:
    return getattr(module, "original_name", type(module).__name__)


def energy_model_of(graph_model: nn.Module, source: str) -> nn.Module:
    """nequip's energy model inside ``graph_model`` (``GraphModel.model.func``), or a one-line ``ValueError``."""
    outer = getattr(graph_model, "model", None)
    func = getattr(outer, "func", None) if outer is not None else None
    if _kind(graph_model) != "GraphModel" or outer is None or _kind(outer) != "ForceStressOutput" or func is None:
        raise ValueError(f"{source}: nequip model structure not recognised: expected GraphModel -> ForceStressOutput -> "
                         f"energy model, got {_kind(graph_model)} -> {_kind(outer) if outer is not None else 'nothing'}")
    return func


def architecture_of(graph_model: nn.Module, source: str) -> Tuple[str, int]:
    """``("nequip", layers)`` or ``("allegro", layers)`` from the module structure (nequip's metadata has no
    layer count), or a one-line ``ValueError`` for a model whose receptive field cannot be determined."""
    func = energy_model_of(graph_model, source)
    kinds = [(name, _kind(child), child) for name, child in _children(func)]
    convs = [name for name, kind, _ in kinds if kind == "ConvNetLayer"]
    allegros = [child for _, kind, child in kinds if kind == "Allegro_Module"]
    if convs and not allegros:
        return "nequip", len(convs)
    if allegros and not convs and len(allegros) == 1:
        layers = getattr(allegros[0], "num_layers", None)
        if not isinstance(layers, int) or layers < 1:
            latents = getattr(allegros[0], "latents", None)
            layers = len(latents) if latents is not None else None
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"{source}: Allegro model without a readable layer count (Allegro_Module.num_layers)")
        return "allegro", layers
    found = ", ".join(kind for _, kind, _ in kinds)
    raise ValueError(f"{source}: cannot tell the receptive field of this nequip model: expected ConvNetLayer "
                     f"(NequIP) or one Allegro_Module (Allegro) in its energy model, found [{found}]")


def nequip_elements(type_names: str, source: str) -> Tuple[str, ...]:
    from ase.data import chemical_symbols

    names = tuple(type_names.split())
    known = set(chemical_symbols[1:])
    for name in names:
        if name not in known:
            raise ValueError(f"{source}: type name {name!r} is not a chemical element symbol; mdpot maps atoms to "
                             f"model types by element, so the model's type_names must be element symbols")
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: type_names {list(names)} repeat an element; mdpot needs one type per element")
    if not names:
        raise ValueError(f"{source}: empty type_names")
    return names


def mdpot_metadata(graph_model: nn.Module, raw: Dict[str, str], source: str,
                   provenance: Dict[str, Any]) -> Dict[str, Any]:
    """mdpot metadata of a loaded nequip TorchScript model (weights digest left empty)."""
    missing = [k for k in NEQUIP_REQUIRED_KEYS if not raw.get(k)]
    if missing:
        raise ValueError(f"{source}: nequip model lacks metadata {missing}; expected the extra files "
                         f"{list(NEQUIP_REQUIRED_KEYS)} that nequip's compile writes")
    try:
        r_max = float(raw["r_max"])
    except ValueError:
        raise ValueError(f"{source}: nequip metadata r_max must be a number, got {raw['r_max']!r}") from None
    if not r_max > 0:
        raise ValueError(f"{source}: nequip metadata r_max must be > 0, got {r_max}")
    dtype = raw["model_dtype"]
    if dtype not in md.DTYPES:
        raise ValueError(f"{source}: nequip model_dtype {dtype!r} is not one of {list(md.DTYPES)}")
    elements = nequip_elements(raw["type_names"], source)
    if raw.get("num_types") and raw["num_types"] != str(len(elements)):
        raise ValueError(f"{source}: nequip metadata num_types={raw['num_types']} but type_names has {len(elements)} names")
    if raw.get("allow_tf32") not in (None, "", "0", "False", "false"):
        raise ValueError(f"{source}: nequip model was compiled with allow_tf32={raw['allow_tf32']}; mdpot needs full "
                         f"float32/float64 precision (re-export with allow_tf32 off)")
    architecture, layers = architecture_of(graph_model, source)
    return {
        md.FORMAT_VERSION_KEY: md.FORMAT_VERSION,
        md.ARCHITECTURE: architecture,
        md.ELEMENTS: elements,
        md.R_MAX: r_max,
        md.NUM_LAYERS: layers,
        md.RECEPTIVE_FIELD: r_max if architecture == "allegro" else layers * r_max,
        md.MODEL_DTYPE: dtype,
        md.ENERGY_UNITS: md.ENERGY_UNIT,
        md.LENGTH_UNITS: md.LENGTH_UNIT,
        md.TORCH_VERSION: torch.__version__,
        md.MDPOT_VERSION: __version__,
        md.PROVENANCE: provenance,
        md.CONFIG: {"source": "nequip", "nequip_metadata": dict(raw)},
        md.WEIGHTS_SHA256: "",
    }


# --------------------------------------------------------------------------------------------------------------
# nequip's own interface, and the numerical checks


def nequip_dict_eval(graph_model: nn.Module, atoms, r_max: float, type_names) -> Dict[str, np.ndarray]:
    """Energy, per-atom energies, forces and (3-D cell) stress from nequip's own dict interface: positions,
    cell and integer image shifts; nequip forms the edge vectors and derives forces and stress itself."""
    from ..data import TypeMapper, atoms_to_graph

    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(type_names)))
    data = {"pos": g.pos.clone(), "edge_index": g.edge_index, "atom_types": g.atom_type}
    periodic = bool(np.any(atoms.pbc))
    if periodic:
        cell = torch.tensor(np.asarray(atoms.cell.array), dtype=torch.float64)
        shifts = torch.linalg.solve(cell.t(), g.edge_shift.t()).t()
        data["edge_cell_shift"] = shifts.round()
        data["cell"] = cell.view(1, 3, 3)
    out = graph_model(data)
    res = {"energy": float(out["total_energy"].detach().sum()),
           "energies": out["atomic_energy"].detach().reshape(-1).numpy().copy(),
           "forces": out["forces"].detach().numpy().copy()}
    if periodic and atoms.cell.rank == 3 and "stress" in out and out["stress"].numel() == 9:
        from ..voigt import to_voigt

        res["stress"] = to_voigt(out["stress"].detach().reshape(3, 3).numpy())
    return res


def contract_eval(module: nn.Module, atoms, r_max: float, elements, atom_virial: bool = True) -> Dict[str, np.ndarray]:
    """The same quantities from an mdpot contract module (ASE conventions, like ``MDPotCalculator``), reduced by
    :func:`mdpot.data.evaluate`; ``stress`` (and ``stresses``) for 3-D periodic cells."""
    from ..data import Batch, TypeMapper, atoms_to_graph, evaluate
    from ..voigt import to_voigt

    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    with_stress = atoms.cell.rank == 3 and bool(np.any(atoms.pbc))
    batch = Batch.from_graphs([g], [atoms.get_volume()] if with_stress else None)
    with torch.jit.optimized_execution(False):
        pred = evaluate(module, batch, virial=True, stress=with_stress, atom_virial=atom_virial)
    res = {"energy": float(pred.energy[0]), "energies": pred.atom_energy.detach().numpy().copy(),
           "forces": pred.forces.detach().numpy().copy(), "virial": pred.virial[0].detach().numpy().copy()}
    if with_stress:
        res["stress"] = pred.stress[0].detach().numpy().copy()
        if atom_virial:
            res["stresses"] = to_voigt(-pred.atom_virial.detach().numpy() / atoms.get_volume())
    return res


def _probe_rod(elements, r_max: float, layers: int, seed: int = 0):
    """A non-periodic, slightly helical rod long enough to hold atoms more than ``layers + 1`` hops from one
    end: the probe for the edge convention and the layer count."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    spacing = 0.45 * r_max
    n = int(np.ceil((layers + 3) * r_max / spacing)) + 2
    k = np.arange(n)
    pos = np.stack([0.3 * r_max * np.cos(1.3 * k), 0.3 * r_max * np.sin(1.3 * k), spacing * k], axis=1)
    pos += rng.normal(0.0, 0.03 * r_max, pos.shape)
    symbols = [elements[i % len(elements)] for i in range(n)]
    return Atoms(symbols, positions=pos, pbc=False)


def _hops(num_atoms: int, edge_index: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Graph distance (edges) of every atom from the set ``sources`` (large for unreachable atoms)."""
    adj: List[List[int]] = [[] for _ in range(num_atoms)]
    for i, j in edge_index.T:
        adj[int(i)].append(int(j))
    dist = np.full(num_atoms, 1 << 30, dtype=np.int64)
    queue = deque()
    for s in sources:
        dist[int(s)] = 0
        queue.append(int(s))
    while queue:
        a = queue.popleft()
        for b in adj[a]:
            if dist[b] > dist[a] + 1:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist


def minimal_edges(edge_index: np.ndarray, num_atoms: int, n_local: int, layers: int) -> np.ndarray:
    """Mask of the edges the contract requires: centre (``edge_index[0]``) at most ``layers - 1`` hops from a
    local atom (the first ``n_local``)."""
    dist = _hops(num_atoms, edge_index, np.arange(n_local))
    return dist[edge_index[0]] <= layers - 1


def check_convention(module: nn.Module, elements, r_max: float, layers: int, dtype: str, source: str) -> float:
    """Confirm on a probe rod that the wrapped model follows the contract's edge convention and locality:
    with the first atoms local, the full edge list and only the edges centred within ``layers - 1`` hops of
    a local atom must give the same local energies, forces, virial and per-atom virial. A model whose centre
    is ``edge_index[1]``, or whose layer count is larger than detected, fails. Returns the max difference."""
    from ..data import TypeMapper, atoms_to_graph
    from ..testing.tolerances import tolerance

    atoms = _probe_rod(elements, r_max, layers)
    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    n_local = 2
    keep = torch.from_numpy(minimal_edges(g.edge_index.numpy(), g.num_atoms, n_local, layers))
    if bool(keep.all()):
        raise ValueError(f"{source}: edge convention not confirmed: the probe has no edge to drop")
    tol = tolerance("locality", dtype)
    with torch.jit.optimized_execution(False):
        full = module(g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, True)
        part = module(g.pos, g.atom_type, g.edge_index[:, keep], g.edge_shift[keep], n_local, True)
    worst = 0.0
    for name, a, b in zip(("local energies", "forces", "virial", "per-atom virial"), part, full):
        err = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(b.abs().max()) if b.numel() else 0.0
        worst = max(worst, err)
        if not err <= tol * (1.0 + scale):
            raise ValueError(f"{source}: edge convention not confirmed: {name} change by {err:.3e} (tolerance "
                             f"{tol:.0e}) when edges centred more than {layers - 1} hop(s) from local atoms are "
                             f"dropped; expected edge_index[0] = centre and {layers} layer(s)")
    return worst


def self_check_structures(elements, r_max: float) -> Dict[str, Any]:
    """The deploy self-check structures: a skewed rattled periodic cell smaller than ``2 r_max`` and a molecule."""
    from ..testing.structures import molecule, sample_structure

    return {"periodic cell": sample_structure(tuple(elements), r_max), "molecule": molecule(tuple(elements))}


def check_against_source(wrapped: nn.Module, source_model: Optional[nn.Module], meta: Dict[str, Any], source: str,
                         reference: Optional[Dict[str, Dict[str, Any]]] = None, what: str = "the nequip model") -> Dict[str, float]:
    """Compare the wrapped model with the source model called through nequip's dict interface (or with
    ``reference``, such results computed elsewhere), on the :func:`self_check_structures`: energy, per-atom
    energy, forces and stress. Raises a one-line ``ValueError`` naming the quantity and the size of the
    disagreement."""
    from ..testing.tolerances import tolerance

    elements, r_max, dtype = meta[md.ELEMENTS], meta[md.R_MAX], meta[md.MODEL_DTYPE]
    tol = tolerance("deploy", dtype)
    errors: Dict[str, float] = {}
    for label, atoms in self_check_structures(elements, r_max).items():
        want = reference[label] if reference is not None else nequip_dict_eval(source_model, atoms, r_max, elements)
        got = contract_eval(wrapped, atoms, r_max, elements, atom_virial=False)
        for key in ("energy", "energies", "forces", "stress"):
            if key not in want:
                continue
            a, b = np.asarray(got[key], dtype=float), np.asarray(want[key], dtype=float)
            err = float(np.max(np.abs(a - b))) if a.size else 0.0
            scale = float(np.max(np.abs(b))) if b.size else 0.0
            errors[f"{label} {key}"] = err
            if a.shape != b.shape or not np.all(np.abs(a - b) <= tol * (1.0 + np.abs(b))):
                raise ValueError(f"{source}: wrapped model disagrees with {what} on the {label}: {key} "
                                 f"max |error| {err:.3e} (tolerance {tol:.0e} relative, magnitude {scale:.3e}); nothing written")
    return errors


# --------------------------------------------------------------------------------------------------------------
# Deploy


def _export_in_subprocess(source: Path, kind: str, workdir: Path) -> Tuple[Path, Dict[str, Any]]:
    """nequip's own load + TorchScript export of a checkpoint or package, in a subprocess; also returns the
    eager model's results on the self-check structures."""
    out, ref = workdir / "exported.nequip.pth", workdir / "eager_reference.json"
    try:
        import nequip  # noqa: F401
    except ImportError:
        what = "nequip and nequip-allegro" if _mentions_allegro(source) else "nequip"
        raise ValueError(f"{source}: is a {KIND_LABELS[kind]}; deploying it needs {what} importable in this Python "
                         f"({INSTALL_HINT}), or deploy the model's .nequip.pth instead") from None
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # nequip's load_saved_model tells a package from a checkpoint by the name (".nequip.zip"); we know the kind
    # from the content, so give it a name that says so.
    named = workdir / ("source.nequip.zip" if kind == NEQUIP_PACKAGE else "source.ckpt")
    try:
        os.symlink(source.resolve(), named)
    except OSError:
        import shutil

        shutil.copyfile(source, named)
    proc = subprocess.run([sys.executable, "-m", "mdpot.interop._nequip_export", str(named), str(out), str(ref)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out.is_file() or not ref.is_file():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("nequip export failed")]
        last = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{source}: could not load the {KIND_LABELS[kind]} with nequip: {last}")
    return out, json.loads(ref.read_text())


def wrap_nequip(path: PathLike, provenance: Optional[Dict[str, Any]] = None,
                source_label: Optional[str] = None) -> Tuple[torch.jit.ScriptModule, Dict[str, Any], nn.Module]:
    """Script the contract wrapper around the nequip TorchScript file at ``path``.

    Returns ``(scripted wrapper, mdpot metadata with weights digest, the loaded nequip module)``."""
    from ..deploy import weights_digest

    path = Path(path)
    label = source_label or str(path)
    graph_model, raw = load_nequip_torchscript(path)
    meta = mdpot_metadata(graph_model, raw, label, dict(provenance or {}))
    scripted = torch.jit.script(NequIPPotential(graph_model).eval())
    meta[md.WEIGHTS_SHA256] = weights_digest(scripted)
    return scripted, meta, graph_model


def deploy_nequip(source: PathLike, out: PathLike, dtype: Optional[str] = None, overwrite: bool = False,
                  kind: Optional[str] = None):
    """Deploy a nequip model (``.nequip.pth``, training checkpoint or ``.nequip.zip``) as an mdpot model file at
    ``out``. The kind is detected from the content (:func:`detect_source_kind`) unless ``kind`` gives it.

    The wrapped model is checked against the source model called through nequip's own interface and its edge
    convention is confirmed before anything is written; the file appears atomically
    (:func:`mdpot._files.atomic_write`: temp file + ``os.replace``; temp files of killed deploys to ``out`` are
    removed). Returns the loaded mdpot model (``mdpot.deploy.LoadedModel``).
    """
    from .._files import atomic_write, sha256_file
    from ..deploy import load_model
    from ..deploy.compile import save_bytes

    source, out = Path(source), Path(out)
    kind = kind or detect_source_kind(source)
    if kind in (MDPOT, MDPOT_CHECKPOINT):
        raise ValueError(f"{source}: is an {KIND_LABELS[kind]}, not a nequip model; use mdpot deploy's mdpot path "
                         f"(mdpot.deploy.deploy_checkpoint) or the model as it is")
    if kind not in (NEQUIP_TORCHSCRIPT, NEQUIP_CHECKPOINT, NEQUIP_PACKAGE):
        raise ValueError(f"unknown source kind {kind!r}; expected one of "
                         f"{[NEQUIP_TORCHSCRIPT, NEQUIP_CHECKPOINT, NEQUIP_PACKAGE]}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out.resolve()} exists; pass overwrite=True (CLI: --force) to replace it")
    if dtype is not None and dtype not in md.DTYPES:
        raise ValueError(f"dtype must be one of {list(md.DTYPES)} or None, got {dtype!r}")

    with tempfile.TemporaryDirectory(prefix="mdpot-nequip-") as tmpdir:
        eager_ref = None
        if kind == NEQUIP_TORCHSCRIPT:
            script_path = source
        else:
            script_path, eager_ref = _export_in_subprocess(source, kind, Path(tmpdir))
        graph_model, raw = load_nequip_torchscript(script_path)
        provenance = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": {"kind": kind, "file": source.name, "sha256": sha256_file(source), "metadata": dict(raw)},
        }
        scripted, meta, graph_model = wrap_nequip(script_path, provenance, source_label=str(source))
        if dtype is not None and dtype != meta[md.MODEL_DTYPE]:
            raise ValueError(f"{source}: requested dtype {dtype} but the nequip model is {meta[md.MODEL_DTYPE]}; "
                             f"nequip fixes the dtype when it builds the model (model_dtype), so deploy it as it is")
        with atomic_write(out) as tmp:
            tmp.write_bytes(save_bytes(scripted, meta))
            loaded = load_model(tmp)
            check_convention(loaded.module, meta[md.ELEMENTS], meta[md.R_MAX], meta[md.NUM_LAYERS],
                             meta[md.MODEL_DTYPE], str(source))
            check_against_source(loaded.module, graph_model, meta, str(source))
            if eager_ref is not None:
                check_against_source(loaded.module, None, meta, str(source), reference=eager_ref,
                                     what=f"the {KIND_LABELS[kind]} as nequip loads it")
    return dataclasses.replace(loaded, path=out)
