"""ASE calculator for deployed mdpot models.

Memory. One model call holds its autograd buffers for every edge at once (about 9 KB per edge for the benchmark
Allegro in float32, 20 KB in float64; a Cu atom has 42 edges within 5 Å). Strictly local models (Allegro:
receptive field equal to ``r_max``) are therefore evaluated in chunks of whole centre atoms of at most
``max_edges`` edges, as the LAMMPS pair style does: an atom's energy is a sum over the edges centred on it, so the
chunks give exactly the one-call results (to rounding). Message-passing models (NequIP) need every edge in one
call; their memory is estimated before the call and a call that cannot fit is refused (:func:`estimate_memory`).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ._malloc import tune_malloc as _tune_malloc
from .contract import ARCHITECTURE, BYTES_PER_EDGE, CONFIG, MODEL_DTYPE, R_MAX, RECEPTIVE_FIELD, WEIGHTS_SHA256
from .data import Graph, TypeMapper, atoms_to_graph
from .voigt import to_voigt

if TYPE_CHECKING:  # the deploy package imports torch.jit machinery; load it only when a model is loaded
    import torch

    from .deploy import LoadedModel

#: ``max_edges`` of the calculator by model dtype for a file that records no ``bytes_per_edge`` (deployed before
#: mdpot measured it, or wrapped from another package): about 1 GB per call for the benchmark Allegro (9 KB per
#: edge in float32, 20 KB in float64; 2400 or 1200 Cu atoms per chunk, and the cost per atom is flat from a few
#: hundred atoms up), so 100k atoms stay under 4 GB.
DEFAULT_MAX_EDGES = {"float32": 100_000, "float64": 50_000}
#: Memory budget of one call (bytes) that sizes ``max_edges`` from the file's ``bytes_per_edge``, as
#: ``pair_style mdpot max_memory`` does (same bounds below). The pair style's default is 2 GB, but it counts
#: neighbour-list entries, skin included (2.7x the edges with a 2 A skin at r_max 5 A); the calculator counts edges.
#: ``bytes_per_edge`` is torch's allocation peak; the process's resident memory grows by about twice that per edge
#: (allocator slack; ``scripts/bench_memory.py``), so 512 MB keeps a call near 1 GB resident.
DEFAULT_MAX_MEMORY = 512 * 1024**2
#: Bounds of a ``max_edges`` sized from ``max_memory``: below the first, calls cost more in overhead than they save.
AUTO_MAX_EDGES_RANGE = (1_000, 100_000_000)
#: Budget of one call of a strictly local model on the CPU when no ``max_memory`` is given (``pair_style mdpot``'s
#: ``CACHE_CHUNK_BYTES``): calls whose intermediates stay in the CPU's caches. The model's elementwise chains are
#: bound by memory traffic; measured, the benchmark Allegro at 2048 atoms, one thread, ran 1.5x faster as an AOTI
#: package and 1.1x as TorchScript than in one call (docs/benchmarks/cache_chunks.md).
CACHE_CHUNK_BYTES = 32 * 1024**2

# Peak memory of one message-passing call: bytes per edge per (tensor-product term x channel) and per radial-MLP
# unit, summed over the blocks, by model dtype. Fitted to the peak RSS of fresh processes (FCC Cu, 42 edges per
# atom, 4000-7000 atoms, energy + forces) of NequIP l_max 1, 2 layers, 32 features, radial MLP (64, 64): 5.9 KB per
# edge in float32, 14.4 KB in float64; and of 16 features, radial MLP (32, 32), l_max 2 and 3 layers. The estimate
# errs high, by 7-35 % on those. ``scripts/bench_memory.py --arch nequip`` measures the benchmark model again.
_NEQUIP_EDGE_BYTES = {"float32": (16.2, 8.6), "float64": (43.0, 22.8)}


class MDPotCalculator(Calculator):
    """ASE calculator running a deployed mdpot model through the model contract.

    Parameters
    ----------
    model : str, path, ``mdpot.deploy.LoadedModel``, or a list of them
        A file written by ``mdpot deploy`` (TorchScript ``.pt`` or AOTInductor package ``.pt2``, told apart by
        content), or an already loaded model. A package runs only on the device it was compiled for. A loaded model is used as it is when it
        sits on ``device``; otherwise the calculator works on a copy, so the caller's model is never moved.
        A committee: a committee file (``mdpot deploy A.ckpt B.ckpt ... -o committee.pt``, format version 7), or a
        list of at least two model files (or loaded models) that share elements (same order), r_max, receptive
        field, architecture, num_layers and dtype (``ValueError`` naming the member otherwise), evaluated in turn
        on one neighbour list. See "Committees" below.
    device : str, optional
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``). Default: the loaded model's device, or ``"cpu"`` for a file.
    tune_malloc : bool
        Tune glibc malloc for this process (``mdpot._malloc``: keeps freed memory in the heap, so that every
        call does not page-fault its whole working set again; per-atom cost otherwise grows with system size).
        A process-wide setting, applied once; ``MDPOT_MALLOC_TUNING=0`` in the environment also disables it.
    max_edges : int, optional
        Strictly local models (Allegro) are evaluated in chunks of consecutive centre atoms holding at most this
        many edges (at least one atom per chunk), as ``pair_style mdpot max_edges N`` does; this bounds the
        memory of a call (about 8 KB per edge for the benchmark Allegro in float32, 20 KB in float64), and small
        calls are faster on a CPU (their intermediates stay in its caches). Default (as the pair style's
        ``max_edges auto``): on the CPU without ``max_memory``, ``CACHE_CHUNK_BYTES`` (32 MB), otherwise
        ``max_memory``, over the ``bytes_per_edge`` the file recorded at deploy, within ``AUTO_MAX_EDGES_RANGE``;
        for a file without that key ``DEFAULT_MAX_EDGES`` (100000 for float32 models, 50000 for float64). The
        choice is in ``max_edges_reason``. Ignored, with a warning, for message-passing models, which take every
        edge in one call.
    max_memory : int, float or str, optional
        The memory budget of one call that sizes the default ``max_edges`` instead of the cache rule: bytes, or a
        size such as ``"2GB"`` or ``"500MB"`` (MB = 1024² bytes, GB = 1024³). Default ``DEFAULT_MAX_MEMORY`` (512
        MB) on a GPU. Not with ``max_edges``.
    check_memory : bool
        For message-passing models, estimate the memory of the call first and refuse one that cannot fit
        (``MemoryError``) instead of starting it (:func:`estimate_memory`).
    parallel_chunks : int, optional
        A strictly local model evaluated in more than one chunk: how many chunks run at once, each in a thread of
        its own on one torch thread. Default on the CPU: torch's thread count (``torch.get_num_threads()`` at each
        call) for a TorchScript file, whose calls release Python's lock, and for an AOTInductor package run by
        mdpot's loader (``torch.classes.mdpot.PackageRunner`` in the fused-kernel library; ``model.module.overlapping``);
        1 for a package run by torch's own loader (it holds the lock, so its calls cannot overlap: the library is not
        built) and on a GPU. 1 evaluates the chunks in turn, each on torch's threads. Chunks are summed in their
        order, so the results do not depend on how many run at once.

    Properties: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/Å), ``stress``
    (eV/Å³, Voigt ``xx yy zz yz xz xy``, ASE sign) and ``stresses`` (per atom, eV/Å³). Stress needs a 3-D
    cell; periodicity may be full, partial or absent, and the cell may be smaller than the cutoff.

    Committees. ``energy``, ``energies``, ``forces``, ``stress`` and ``stresses`` are the members' mean, and
    ``results`` gains ``energy_std`` (eV: the standard deviation over the K members of their total energies),
    ``energies_std`` (``[N]`` eV: of each atom's energy), ``forces_std`` (``[N]`` eV/Å, DeePMD's force deviation:
    ``sqrt(mean_k |F_k,i - F̄_i|²)`` with ``F̄_i`` the mean force on atom ``i``) and ``max_force_std`` (eV/Å,
    its maximum over the atoms, 0 without atoms). Standard deviations divide by K (not K - 1). ``committee_size``
    is K (1 for a single model, whose results have no ``*_std`` keys). Strictly local members are chunked by
    ``max_edges`` as a single model is (for a list of files: sized by member 0's ``bytes_per_edge``, since
    members are called one at a time; for a committee file: by the file's, measured on the whole committee call).

    Running out of memory raises ``MemoryError`` whose first line says so, with the atom and edge counts and
    what to change. The calculator pickles (``multiprocessing`` included): it reloads its model from the file,
    refusing a file whose weights changed since, or from bytes when it was given an in-memory model.

    Example
    -------
    >>> from ase.build import bulk
    >>> atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    >>> atoms.calc = MDPotCalculator("cu.pt")
    >>> atoms.get_potential_energy()
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]

    def __init__(self, model: Union[str, os.PathLike, "LoadedModel", Sequence[Union[str, os.PathLike, "LoadedModel"]]],
                 device: Optional[str] = None,
                 tune_malloc: bool = True, max_edges: Optional[int] = None, check_memory: bool = True,
                 max_memory: Union[int, float, str, None] = None, parallel_chunks: Optional[int] = None,
                 **kwargs) -> None:
        from .deploy import LoadedModel, load_model

        super().__init__(**kwargs)
        if parallel_chunks is not None and (isinstance(parallel_chunks, bool)
                                            or not isinstance(parallel_chunks, (int, np.integer)) or parallel_chunks < 1):
            raise ValueError(f"parallel_chunks must be a positive integer, got {parallel_chunks!r}")
        if max_edges is not None and (isinstance(max_edges, bool) or not isinstance(max_edges, (int, np.integer))
                                      or max_edges < 1):
            raise ValueError(f"max_edges must be a positive integer, got {max_edges!r}")
        if max_memory is not None:
            if max_edges is not None:
                raise ValueError(f"max_memory sizes the default max_edges; it cannot be combined with "
                                 f"max_edges={max_edges}")
            budget = parse_memory(max_memory)
        else:
            budget = DEFAULT_MAX_MEMORY
        def one(item) -> "LoadedModel":
            if isinstance(item, LoadedModel):
                return item if device is None else item.to(device)
            if isinstance(item, (str, os.PathLike)):
                return load_model(item, device="cpu" if device is None else device)
            raise TypeError(f"model must be a path or LoadedModel, or a list of them, got {type(item).__name__}")

        #: The members of a committee given as a list of files (``None`` otherwise), evaluated in turn.
        self.members: Optional[List["LoadedModel"]] = None
        if isinstance(model, (list, tuple)):
            from .deploy.committee import check_members

            self.members = [one(item) for item in model]
            check_members([m.metadata for m in self.members],
                          [str(m.path) if m.path is not None else f"model {k}" for k, m in enumerate(self.members)])
            if len({m.device for m in self.members}) > 1:
                raise ValueError(f"committee members sit on different devices {[str(m.device) for m in self.members]}; "
                                 "pass device=")
            self.model = self.members[0]
        else:
            self.model = one(model)
        #: Number of committee members (1 for a single model).
        self.committee_size = len(self.members) if self.members is not None else self.model.committee_size
        if self.committee_size > 1:
            self.implemented_properties = list(type(self).implemented_properties) + list(COMMITTEE_PROPERTIES)
        self.tune_malloc = tune_malloc
        if tune_malloc:
            _tune_malloc()
        self.device = self.model.device
        self.r_max = self.model.r_max
        self.mapper = TypeMapper(self.model.elements)
        self.check_memory = check_memory
        meta = self.model.metadata
        #: Strictly local: an atom's energy depends only on the edges centred on it (receptive field = r_max).
        self.strictly_local = meta[RECEPTIVE_FIELD] <= meta[R_MAX]
        if max_edges is not None and not self.strictly_local:
            warnings.warn(f"max_edges {max_edges} is ignored: the model passes messages (receptive field "
                          f"{meta[RECEPTIVE_FIELD]} Å > r_max {meta[R_MAX]} Å), so it takes every edge in one call",
                          stacklevel=2)
        #: Why ``max_edges`` has its value (the pair style logs the same choice).
        self.max_edges_reason: str
        if max_edges is not None:
            self.max_edges, self.max_edges_reason = int(max_edges), "given"
        else:
            import torch

            cache_sized = max_memory is None and self.strictly_local and torch.device(self.device).type == "cpu"
            self.max_edges, self.max_edges_reason = auto_max_edges(meta, budget, cache_sized)
        self._edge_bytes = _edge_bytes(meta)
        #: Chunks evaluated at once (``None``: torch's thread count at each call, where chunks can overlap).
        self.parallel_chunks = None if parallel_chunks is None else int(parallel_chunks)
        self._pool = None  # (workers, executor) of the overlapping chunks, made on first use

    def graph(self, atoms: Atoms) -> Graph:
        """Model-contract inputs for ``atoms`` (neighbour list within r_max)."""
        return atoms_to_graph(atoms, self.r_max, self.mapper)

    def calculate(self, atoms: Optional[Atoms] = None, properties: Sequence[str] = ("energy",),
                  system_changes: List[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties or "stresses" in properties
        if want_stress and atoms.cell.rank < 3:
            raise PropertyNotImplementedError(
                f"stress needs a 3-D cell; this cell has rank {atoms.cell.rank} (pbc={atoms.pbc.tolist()})")
        g = self.graph(atoms)
        atom_virial_wanted = "stresses" in properties
        if not self.strictly_local and self.check_memory:
            self._refuse_if_too_big(g.num_atoms, g.num_edges)
        try:
            atom_energy, forces, virial, atom_virial = self._evaluate(g, atom_virial_wanted)
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise MemoryError(self._oom_message(g.num_atoms, g.num_edges, exc)) from None
        _check_finite(atom_energy, forces)
        spread = {}
        if self.committee_size > 1:
            spread = committee_spread(atom_energy, forces)
            atom_energy, forces, virial, atom_virial = (_mean(x) for x in (atom_energy, forces, virial, atom_virial))
        else:
            atom_energy, forces, virial, atom_virial = atom_energy[0], forces[0], virial[0], atom_virial[0]
        energy = float(atom_energy.sum())
        self.results = {"energy": energy, "free_energy": energy, "energies": atom_energy, "forces": forces}
        self.results.update(spread)
        if atoms.cell.rank == 3:
            volume = atoms.get_volume()
            self.results["stress"] = to_voigt(-virial / volume)
            if atom_virial_wanted:
                self.results["stresses"] = to_voigt(-atom_virial / volume)

    # -- evaluation -------------------------------------------------------------------------------------------

    def _evaluate(self, g: Graph, atom_virial: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-atom energies ``[K, N]``, forces ``[K, N, 3]``, virial ``[K, 3, 3]`` and per-atom virial
        ``[K, N, 3, 3]`` (or ``[K, 0, 3, 3]``) of the whole graph for each of the K members (K = 1 for a single
        model), float64 numpy, in one call or in chunks of centre atoms."""
        n = g.num_atoms
        chunks = [(0, n)]
        if self.strictly_local and g.num_edges > self.max_edges:
            counts = np.bincount(g.edge_index[0].numpy(), minlength=n)
            chunks = centre_chunks(counts, self.max_edges)
        if len(chunks) == 1:
            return tuple(t.detach().cpu().numpy() for t in self._call(g, n, atom_virial))
        return self._evaluate_chunks(g, chunks, atom_virial)

    def _call(self, g: Graph, n_local: int, atom_virial: bool):
        """The contract outputs of every member, stacked on a leading axis (K = 1 for a single model)."""
        import torch

        g = g.to(self.device)
        args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, n_local, atom_virial)
        if self.members is not None:
            outputs = [m(*args) for m in self.members]
            return tuple(torch.stack(parts) for parts in zip(*outputs))
        if self.committee_size > 1:
            with torch.jit.optimized_execution(False):
                return self.model.module.committee_forward(*args)
        return tuple(t.unsqueeze(0) for t in self.model(*args))

    def chunk_workers(self, n_chunks: int) -> int:
        """How many of ``n_chunks`` chunks :meth:`calculate` evaluates at once (``parallel_chunks``)."""
        import torch

        if self.parallel_chunks is not None:
            wanted = self.parallel_chunks
        elif torch.device(self.device).type == "cpu" and (self.model.format == "torchscript"
                                                           or getattr(self.model.module, "overlapping", False)):
            wanted = torch.get_num_threads()
        else:
            wanted = 1
        return max(1, min(wanted, n_chunks))

    def _evaluate_chunks(self, g: Graph, chunks: Sequence[Tuple[int, int]], atom_virial: bool):
        import torch

        n = g.num_atoms
        centre = g.edge_index[0]
        # edges grouped by centre (stable: each centre keeps its edges' order, as in the one-call list)
        order = torch.argsort(centre, stable=True)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(centre.numpy(), minlength=n), out=starts[1:])
        k = self.committee_size
        energies = torch.empty((k, n), dtype=torch.float64)
        forces = torch.zeros((k, n, 3), dtype=torch.float64)
        virial = torch.zeros((k, 3, 3), dtype=torch.float64)
        atom_vir = torch.zeros((k, n if atom_virial else 0, 3, 3), dtype=torch.float64)
        workers = self.chunk_workers(len(chunks))

        def one(chunk: Tuple[int, int]):
            first, end = chunk
            if workers > 1:
                torch.set_num_threads(1)  # this thread's torch work (OpenMP's count is per thread)
            edges = order[starts[first]:starts[end]]
            pair = g.edge_index.index_select(1, edges)
            # the chunk's atoms: its centres first (their energies count), then every other atom an edge uses
            neighbours = pair[1]
            inside = (neighbours >= first) & (neighbours < end)
            outside = torch.unique(neighbours[~inside])  # sorted
            members = torch.cat([torch.arange(first, end, dtype=torch.int64), outside])
            # atom index -> index within the chunk: a centre's offset from first, another atom's place after them
            local = torch.stack([pair[0] - first, torch.where(inside, neighbours - first,
                                                              (end - first) + torch.searchsorted(outside, neighbours))])
            sub = Graph(g.pos.index_select(0, members), g.atom_type.index_select(0, members),
                        local, g.edge_shift.index_select(0, edges))
            return (first, end, members) + tuple(t.detach().cpu() for t in self._call(sub, end - first, atom_virial))

        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            if self._pool is None or self._pool[0] != workers:
                if self._pool is not None:
                    self._pool[1].shutdown(wait=False)
                self._pool = (workers, ThreadPoolExecutor(workers, thread_name_prefix="mdpot-chunk"))
            threads = torch.get_num_threads()
            try:
                results = self._pool[1].map(one, chunks)  # in chunk order, whichever finishes first
                self._sum_chunks(results, energies, forces, virial, atom_vir, atom_virial)
            finally:
                torch.set_num_threads(threads)  # also torch's process-wide settings (MKL) the chunks changed
        else:
            self._sum_chunks(map(one, chunks), energies, forces, virial, atom_vir, atom_virial)
        return energies.numpy(), forces.numpy(), virial.numpy(), atom_vir.numpy()

    @staticmethod
    def _sum_chunks(results, energies, forces, virial, atom_vir, atom_virial: bool) -> None:
        for first, end, members, e, f, w, aw in results:
            energies[:, first:end] = e
            forces.index_add_(1, members, f)
            virial += w
            if atom_virial:
                atom_vir.index_add_(1, members, aw)

    # -- memory ------------------------------------------------------------------------------------------------

    def _refuse_if_too_big(self, n_atoms: int, n_edges: int) -> None:
        if self._edge_bytes is None:
            return
        need = self._edge_bytes * n_edges
        have = available_memory(self.device)
        if have is not None and need > have:
            raise MemoryError(
                f"not enough memory for {n_atoms} atoms and {n_edges} edges in one call of this message-passing "
                f"model: estimated {need / 1e9:.1f} GB, available {have / 1e9:.1f} GB on {self.device}; deploy it "
                "with --dtype float32, or run it in LAMMPS (pair_style mdpot) on more MPI ranks "
                "(MDPotCalculator(check_memory=False) skips this estimate)")

    def _oom_message(self, n_atoms: int, n_edges: int, exc: BaseException) -> str:
        dtype = self.model.metadata[MODEL_DTYPE]
        if self.strictly_local:
            calls = f"in calls of up to {min(self.max_edges, n_edges)} edges"
            hints = [f"lower max_edges (now {self.max_edges})"]
        else:
            calls = "in one call (message passing)"
            hints = []
        if dtype == "float64":
            hints.append("deploy the model with --dtype float32")
        hints.append("run it in LAMMPS (pair_style mdpot) on more MPI ranks")
        cause = _last_line(exc)
        return (f"out of memory evaluating {n_atoms} atoms and {n_edges} edges {calls} "
                f"({self.model.metadata[ARCHITECTURE]}, {dtype}, {self.device}): {', '.join(hints[:-1])}"
                f"{' or ' if len(hints) > 1 else ''}{hints[-1]}" + (f"\n(torch: {cause})" if cause else ""))

    # -- pickling -------------------------------------------------------------------------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        state["model"] = _model_source(state["model"])
        if state.get("members") is not None:
            state["members"] = [_model_source(m) for m in state["members"]]
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = {"parallel_chunks": None, **state, "_pool": None}  # a calculator pickled before parallel_chunks
        state["model"] = _restore_model(state["model"])
        if state.get("members") is not None:
            state["members"] = [_restore_model(m) for m in state["members"]]
            state["model"] = state["members"][0]
        self.__dict__.update(state)
        if self.tune_malloc:
            _tune_malloc()


#: ``results`` keys a committee adds (``MDPotCalculator``, "Committees").
COMMITTEE_PROPERTIES = ("energy_std", "energies_std", "forces_std", "max_force_std")


def _mean(stacked: np.ndarray) -> np.ndarray:
    """Mean over the member axis as the committee file's ``forward`` forms it: ``x_0 + mean_k (x_k - x_0)``."""
    return stacked[0] + (stacked - stacked[0]).mean(axis=0)


def committee_spread(atom_energy: np.ndarray, forces: np.ndarray) -> Dict[str, Any]:
    """The spread of K members' per-atom energies ``[K, N]`` (eV) and forces ``[K, N, 3]`` (eV/Å): ``energy_std``
    (eV, of the total energies), ``energies_std`` ``[N]`` (eV), ``forces_std`` ``[N]`` (eV/Å,
    ``sqrt(mean_k |F_k,i - F̄_i|²)``) and ``max_force_std`` (eV/Å). Standard deviations divide by K."""
    totals = atom_energy.sum(axis=1)
    deviation = forces - _mean(forces)
    forces_std = np.sqrt((deviation ** 2).sum(axis=2).mean(axis=0))
    return {"energy_std": float(np.sqrt(((totals - _mean(totals)) ** 2).mean())),
            "energies_std": np.sqrt(((atom_energy - _mean(atom_energy)) ** 2).mean(axis=0)),
            "forces_std": forces_std, "max_force_std": float(forces_std.max()) if forces_std.size else 0.0}


def centre_chunks(edges_per_atom: np.ndarray, max_edges: int) -> List[Tuple[int, int]]:
    """Consecutive ranges ``[first, end)`` of centre atoms holding at most ``max_edges`` edges each, or one atom
    when that atom alone has more (the pair style's ``max_edges`` rule). ``edges_per_atom[i]`` is the number of
    edges centred on atom ``i``."""
    n = len(edges_per_atom)
    if n == 0:
        return []
    ends = np.cumsum(edges_per_atom, dtype=np.int64)
    chunks = []
    first, before = 0, 0
    while first < n:
        # the last atom whose cumulative edge count stays within the budget, but at least one atom
        end = int(np.searchsorted(ends, before + max_edges, side="right"))
        end = max(end, first + 1)
        chunks.append((first, end))
        before = int(ends[end - 1])
        first = end
    return chunks


def parse_memory(value: Union[int, float, str]) -> float:
    """Bytes of a memory size: a positive number of bytes, or a string with the unit ``MB`` (1024² bytes) or ``GB``
    (1024³), as ``pair_style mdpot max_memory`` reads it (``"2GB"``, ``"500MB"``, ``"1.5GB"``)."""
    scale = 1.0
    number: Any = value
    if isinstance(value, str):
        text, unit = value[:-2], value[-2:]
        scale = {"MB": 1024.0**2, "GB": 1024.0**3}.get(unit, 0.0)
        try:  # a plain decimal number before the unit: no spaces, sign, or Python's digit separators
            plain = scale and text and text == text.strip() and text[0] != "+" and "_" not in text
            number = float(text) if plain else None
        except ValueError:
            number = None
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        number = None
    if number is None or not np.isfinite(number) or not number > 0:
        raise ValueError(f"max_memory must be a positive size in bytes, or a string in MB or GB (e.g. '2GB', "
                         f"'500MB'), got {value!r}")
    return float(number) * scale


def auto_max_edges(metadata: Dict[str, Any], max_memory: float = DEFAULT_MAX_MEMORY,
                   cache_sized: bool = False) -> Tuple[int, str]:
    """The calculator's default ``max_edges`` and why: ``max_memory`` bytes (``cache_sized``: at most
    ``CACHE_CHUNK_BYTES``) over the file's ``bytes_per_edge``, within ``AUTO_MAX_EDGES_RANGE``, or
    ``DEFAULT_MAX_EDGES`` of the model dtype for a file without that key (the rule of ``pair_style mdpot max_edges
    auto``)."""
    per_edge = metadata.get(BYTES_PER_EDGE)
    if not per_edge:
        return (DEFAULT_MAX_EDGES[metadata[MODEL_DTYPE]],
                "the model file records no bytes_per_edge (deployed before mdpot measured it, or wrapped from "
                f"another package): the {metadata[MODEL_DTYPE]} default")
    budget = min(max_memory, CACHE_CHUNK_BYTES) if cache_sized else max_memory
    low, high = AUTO_MAX_EDGES_RANGE
    edges = int(budget // per_edge)
    chosen = min(max(edges, low), high)
    note = (f", raised to the minimum {low}" if edges < low else f", lowered to the maximum {high}" if edges > high
            else "")
    rule = "cache-sized calls on the CPU," if cache_sized else "max_memory"
    return chosen, f"{rule} {budget / 1024**2:.6g} MB / {per_edge:.0f} bytes per edge measured at deploy{note}"


def estimate_memory(metadata: Dict[str, Any], n_atoms: int, n_edges: int) -> Optional[float]:
    """Estimated peak bytes of one call of a message-passing mdpot model (NequIP) on ``n_atoms`` atoms and
    ``n_edges`` edges (energy, forces, stress): the file's ``bytes_per_edge`` (measured at deploy) if it has one,
    otherwise from measurements of the benchmark NequIP scaled by the size of the model's tensor products;
    ``None`` for a strictly local model (evaluated in chunks) or a file with neither (a model wrapped from the
    nequip package).

    Example
    -------
    >>> estimate_memory(load_model("nequip.pt").metadata, 100_000, 4_200_000) / 1e9   # doctest: +SKIP
    26.1
    """
    per_edge = _edge_bytes(metadata)
    return None if per_edge is None else per_edge * n_edges


def _edge_bytes(metadata: Dict[str, Any]) -> Optional[float]:
    if metadata[RECEPTIVE_FIELD] <= metadata[R_MAX]:
        return None
    if metadata.get(BYTES_PER_EDGE):
        return float(metadata[BYTES_PER_EDGE])
    if metadata[ARCHITECTURE] != "nequip":
        return None
    from .models import NequIP, NequIPConfig

    try:
        config = NequIPConfig.from_dict(metadata[CONFIG])
    except (TypeError, ValueError):  # not an mdpot NequIP config (a wrapped nequip model)
        return None
    import torch

    with torch.random.fork_rng(devices=[]):  # building the model draws its initial weights; keep the caller's RNG
        blocks = NequIP(config).blocks
    terms = sum(len(block.tp.term_i) for block in blocks) * config.num_features
    radial = len(blocks) * sum(config.radial_mlp)
    per_term, per_radial = _NEQUIP_EDGE_BYTES[metadata[MODEL_DTYPE]]
    return per_term * terms + per_radial * radial


def available_memory(device: Any = "cpu") -> Optional[float]:
    """Bytes a new allocation can still get: CUDA free memory on a GPU; on the host the smaller of
    ``MemAvailable`` (``/proc/meminfo``) and the cgroup's limit minus its usage. ``None`` when unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    values = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values.append(float(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = float(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and float(limit) < 2**60:
            values.append(max(0.0, float(limit) - usage))
        break
    return min(values) if values else None


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return any(s in text for s in ("can't allocate memory", "cannot allocate memory", "out of memory",
                                   "not enough memory"))


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _model_source(model: "LoadedModel") -> Tuple:
    """What a pickled calculator keeps of its model: the file (with its weights digest) when the model in memory
    is that file's, else the TorchScript bytes, else (an eager model, or a package whose file changed: it pickles
    as its checked bytes) the LoadedModel itself."""
    import torch

    from .deploy import weights_digest

    device = str(model.device)
    if model.format == "aoti":  # the package's content was checked on loading; its bytes travel otherwise
        if model.path is not None and _package_digest(model.path) == model.metadata[WEIGHTS_SHA256]:
            return ("file", str(Path(model.path).resolve()), model.metadata[WEIGHTS_SHA256], device)
        return ("object", model)
    if not isinstance(model.module, torch.jit.ScriptModule):
        return ("object", model)
    digest = weights_digest(model.module)
    if model.path is not None and digest == model.metadata[WEIGHTS_SHA256]:
        return ("file", str(Path(model.path).resolve()), digest, device)
    buf = io.BytesIO()
    torch.jit.save(model.module, buf)
    return ("bytes", buf.getvalue(), digest, dict(model.metadata), device)


def _package_digest(path: Path) -> Optional[str]:
    """The digest of the AOTInductor package at ``path`` as it is now (``None`` if it cannot be read as one)."""
    from .deploy.aoti import package_digest, read_records

    try:
        return package_digest(read_records(Path(path).read_bytes(), str(path)))
    except (OSError, ValueError):
        return None


def _restore_model(source: Tuple) -> "LoadedModel":
    import torch

    from .deploy import LoadedModel, load_model, weights_digest

    kind = source[0]
    if kind == "object":
        return source[1]
    if kind == "file":
        _, path, digest, device = source
        model = load_model(path, device=device)
        found = model.metadata[WEIGHTS_SHA256]
        if found != digest:
            raise ValueError(f"{path}: the model file changed since the calculator was pickled "
                             f"(weights {found[:12]}… != {digest[:12]}…)")
        return model
    _, data, digest, metadata, device = source
    module = torch.jit.load(io.BytesIO(data), map_location=device)
    module.eval()
    if weights_digest(module) != digest:
        raise ValueError("the pickled model's weights do not match the digest taken when it was pickled")
    return LoadedModel(module, metadata, None, torch.device(device))


def _check_finite(atom_energy: np.ndarray, forces: np.ndarray) -> None:
    """Per-atom energies ``[K, N]`` and forces ``[K, N, 3]`` of K members: a ``ValueError`` naming the atoms where
    any member gave a non-finite value."""
    bad = np.flatnonzero(~np.isfinite(atom_energy).all(axis=0) | ~np.isfinite(forces).all(axis=(0, 2)))
    if bad.size:
        raise ValueError(f"model returned non-finite energy or forces for atom indices {bad[:10].tolist()}")
