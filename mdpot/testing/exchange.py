"""An exact Python reference of the per-block feature exchange (``docs/message_passing_exchange.md``).

A message-passing model evaluated the way a LAMMPS pair style would evaluate it on several MPI ranks, with a
ghost shell of one ``r_max`` (+ skin) instead of the receptive field: the periodic cell is cut into a grid of
subdomains ("ranks"), each owning the atoms inside it and knowing, as ghosts, every periodic image (its own
atoms' included) inside its subdomain widened by the ghost cutoff, as LAMMPS's brick communication does. Only
the block methods of the deployed contract are called (``mp_embed``, ``mp_block``, ``mp_block_vjp``,
``mp_readout``, ``mp_pair`` when ``mp_has_pair()``, ``mp_edge_derivatives``); between blocks, ghost rows of the
exchanged features are copied from their owners (the pair style's forward communication) and, in the backward
pass, gradients on ghost rows are summed into their owners (reverse communication). All ranks live in this process; every step a rank takes uses
only its own arrays and what the two communications bring.

The result must equal the whole-graph ``forward`` on the periodic graph (``tests/test_exchange.py``).

Example
-------
>>> from mdpot.deploy import eager_model
>>> model = eager_model(small_model("nequip", num_layers=3), "float64")
>>> ranks = decompose(alloy(("Cu", "Au"), (3, 3, 3)), (2, 2, 1), model.r_max, model.elements)
>>> result = exchange_outputs(model.module, ranks)
>>> result.atom_energy.shape
torch.Size([108])
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms

from ..data import TypeMapper

__all__ = ["ExchangeResult", "RankGraph", "decompose", "exchange_outputs"]


@dataclass(frozen=True)
class RankGraph:
    """What one rank knows: its owned ("local") atoms first, then its ghosts, and the edges of its local centres.

    Attributes
    ----------
    rank : int
        Index of the rank in the grid (x fastest).
    local : ndarray [n] int
        Index in the Atoms of each owned atom.
    ghost : ndarray [G] int
        Index in the Atoms of the atom each ghost is an image of.
    owner, owner_row : ndarray [G] int
        The rank owning each ghost's atom and that atom's row among the owner's local atoms.
    pos : Tensor [n + G, 3] float64, Å
        Local atoms wrapped into the cell, ghosts at their image positions.
    atom_type : Tensor [n + G] int64
    edge_index : Tensor [2, E] int64
        Every pair closer than ``r_max`` whose centre (row 0) is local, sorted by centre; row 1 indexes ``pos``.
    edge_vec : Tensor [E, 3] float64, Å
        ``pos[j] - pos[i]``.
    """

    rank: int
    local: np.ndarray
    ghost: np.ndarray
    owner: np.ndarray
    owner_row: np.ndarray
    pos: torch.Tensor
    atom_type: torch.Tensor
    edge_index: torch.Tensor
    edge_vec: torch.Tensor

    @property
    def n_local(self) -> int:
        return int(len(self.local))

    @property
    def n_atoms(self) -> int:
        return int(len(self.local) + len(self.ghost))


@dataclass(frozen=True)
class ExchangeResult:
    """The contract's outputs for every atom of the Atoms (float64: eV, eV/Å, eV, eV) and what was communicated.

    ``forward_bytes`` / ``reverse_bytes``: bytes the forward and reverse communications of the features moved,
    summed over ranks, ``L - 1`` exchanges each, at the model dtype's size (a ghost row that is an image of an
    atom of the same rank counts too: LAMMPS copies it through the same buffers).
    """

    atom_energy: torch.Tensor
    forces: torch.Tensor
    virial: torch.Tensor
    atom_virial: torch.Tensor
    forward_bytes: int
    reverse_bytes: int


def _spacings(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell along each cell vector, Å."""
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3])) for d in range(3)])


def decompose(atoms: Atoms, grid: Sequence[int], r_max: float, elements: Sequence[str],
              skin: float = 1.0) -> List[RankGraph]:
    """Cut ``atoms`` into ``grid[0] x grid[1] x grid[2]`` subdomains of equal fractional size along the cell
    vectors, as LAMMPS's ``processors`` grid does, and build each rank's atoms, ghosts and edges.

    Ghosts are every periodic image (along periodic directions) whose fractional coordinates lie within the
    subdomain widened by ``r_max + skin`` Å on each side, the atom's own unshifted copy excepted if the rank owns
    it: a superset of what ``r_max`` needs, images of the rank's own atoms included (small cells). Along a
    non-periodic direction the outer subdomains extend to infinity. Needs a 3-D cell.
    """
    grid = tuple(int(g) for g in grid)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be three positive integers, got {grid}")
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if atoms.cell.rank != 3:
        raise ValueError(f"decompose needs a 3-D cell, got rank {atoms.cell.rank}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    types = TypeMapper(tuple(elements))(atoms.numbers)
    frac = np.asarray(atoms.positions, dtype=np.float64) @ np.linalg.inv(cell)
    frac[:, pbc] -= np.floor(frac[:, pbc])
    grid_arr = np.array(grid)
    coord = np.clip(np.floor(frac * grid_arr).astype(int), 0, grid_arr - 1)
    rank_of = coord[:, 0] + grid[0] * (coord[:, 1] + grid[1] * coord[:, 2])
    n_ranks = int(np.prod(grid))
    local_of = [np.flatnonzero(rank_of == r) for r in range(n_ranks)]
    row_of = np.empty(len(atoms), dtype=int)
    for r in range(n_ranks):
        row_of[local_of[r]] = np.arange(len(local_of[r]))

    r_ghost = r_max + skin
    ext = r_ghost / _spacings(cell)
    reach = [int(math.ceil(e)) + 1 if p else 0 for e, p in zip(ext, pbc)]
    shifts = np.array(list(itertools.product(*[range(-k, k + 1) for k in reach])), dtype=np.float64)
    images = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)    # [S * N, 3], shift-major
    image_atom = np.tile(np.arange(len(atoms)), len(shifts))
    image_shift = np.repeat(shifts, len(atoms), axis=0)
    unshifted = ~image_shift.any(axis=1)

    ranks: List[RankGraph] = []
    for r in range(n_ranks):
        c = np.array([r % grid[0], (r // grid[0]) % grid[1], r // (grid[0] * grid[1])])
        lo, hi = c / grid_arr, (c + 1) / grid_arr
        lo = np.where(~pbc & (c == 0), -np.inf, lo)
        hi = np.where(~pbc & (c == grid_arr - 1), np.inf, hi)
        inside = ((images >= lo - ext) & (images < hi + ext)).all(axis=1)
        is_ghost = inside & ~(unshifted & (rank_of[image_atom] == r))
        ghost = image_atom[is_ghost]
        local = local_of[r]
        pos = np.concatenate([frac[local], images[is_ghost]]) @ cell
        atom_type = np.concatenate([types[local], types[ghost]])
        n = len(local)
        centres, neighbours, vecs = [], [], []
        for c0 in range(0, n, 256):    # centres in blocks: the distance table stays small for large systems
            diff = pos[None, :, :] - pos[c0:min(c0 + 256, n), None, :]    # [c, n + G, 3]
            close = np.linalg.norm(diff, axis=2) < r_max
            close[np.arange(len(close)), c0 + np.arange(len(close))] = False
            i, j = np.nonzero(close)    # row-major: sorted by centre
            centres.append(c0 + i)
            neighbours.append(j)
            vecs.append(diff[i, j])
        edge_index = np.stack([np.concatenate(centres), np.concatenate(neighbours)]) if n else np.zeros((2, 0))
        ranks.append(RankGraph(
            rank=r, local=local, ghost=ghost, owner=rank_of[ghost], owner_row=row_of[ghost],
            pos=torch.from_numpy(pos), atom_type=torch.from_numpy(np.asarray(atom_type, dtype=np.int64)),
            edge_index=torch.from_numpy(edge_index.astype(np.int64)),
            edge_vec=torch.from_numpy(np.concatenate(vecs) if n else np.zeros((0, 3)))))
    return ranks


def _forward_comm(ranks: Sequence[RankGraph], x_local: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], int]:
    """Every rank's rows ``[n + G, W]``: its own local rows, then each ghost's row copied from its owner."""
    out, moved = [], 0
    for rg in ranks:
        rows = x_local[rg.rank].new_empty((rg.n_atoms, x_local[rg.rank].shape[1]))
        rows[:rg.n_local] = x_local[rg.rank]
        for o in np.unique(rg.owner):
            mask = rg.owner == o
            ghost_rows = x_local[o].index_select(0, torch.from_numpy(rg.owner_row[mask]))
            rows[rg.n_local + torch.from_numpy(np.flatnonzero(mask))] = ghost_rows
            moved += ghost_rows.numel() * ghost_rows.element_size()
        out.append(rows)
    return out, moved


def _reverse_comm(ranks: Sequence[RankGraph], grad_all: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], int]:
    """Every rank's local rows ``[n, W]`` of ``grad_all``, each plus the ghost rows of every rank that are its
    images."""
    out = [g[:rg.n_local].clone() for rg, g in zip(ranks, grad_all)]
    moved = 0
    for rg, g in zip(ranks, grad_all):
        ghost_rows = g[rg.n_local:]
        moved += ghost_rows.numel() * ghost_rows.element_size()
        for o in np.unique(rg.owner):
            mask = rg.owner == o
            out[o].index_add_(0, torch.from_numpy(rg.owner_row[mask]), ghost_rows[torch.from_numpy(np.flatnonzero(mask))])
    return out, moved


def _chunks(rg: RankGraph, max_edges: Optional[int]) -> List[Tuple[int, int, int, int]]:
    """Centre ranges ``[c0, c1)`` with their edge ranges ``[e0, e1)``: at most ``max_edges`` edges each (a centre
    with more goes alone), the pair style's chunking rule; one chunk without a limit."""
    n, centres = rg.n_local, rg.edge_index[0]
    if max_edges is None or n == 0:
        return [(0, n, 0, int(centres.shape[0]))]
    starts = torch.searchsorted(centres, torch.arange(n + 1)).tolist()
    out, c0 = [], 0
    while c0 < n:
        c1 = c0 + 1
        while c1 < n and starts[c1 + 1] - starts[c0] <= max_edges:
            c1 += 1
        out.append((c0, c1, starts[c0], starts[c1]))
        c0 = c1
    return out


def exchange_outputs(module: Any, ranks: Sequence[RankGraph], compute_atom_virial: bool = True,
                     max_edges: Optional[int] = None, keep_graph: bool = False,
                     shared_geometry: Optional[bool] = None) -> ExchangeResult:
    """Evaluate ``module`` (a ``MessagePassingPotential``, eager or TorchScript) on ``ranks`` by per-block
    exchange, and assemble the contract's outputs per atom of the decomposed Atoms.

    Forward: embed every rank's atoms (ghosts from their types), then for each block ``b``: if ``b > 0``, fill
    ghost rows of ``x_b`` from their owners; evaluate the block on the local centres. Readout gives the energies
    and the gradient on the final state; a model with a short-range pair term (``mp_has_pair()``) adds
    ``mp_pair``'s energies on each rank's local-centred edges (per chunk with ``max_edges``), and its edge
    gradients to the blocks'. Backward, blocks in reverse order: the VJP of block ``b`` gives gradients
    on the state, on every row of ``x_b`` and on the edge vectors; ghost rows of the ``x_b`` gradient are summed
    into their owners', which is the gradient on block ``b - 1``'s ``x`` output. Edge-vector gradients, summed
    over blocks, give forces, virial and per-atom virial as ``forward`` does; ghost rows go to their atoms.

    ``max_edges``: evaluate each block in chunks of whole centres of at most that many edges, recomputing each
    chunk in the backward pass (``mp_block_vjp``). ``keep_graph``: instead, keep each block's autograd graph
    from the forward pass and differentiate it (one chunk only). ``shared_geometry`` (with ``keep_graph``; default:
    when the module has ``mp_geometry``, as the engine does): compute each rank's edge geometry once
    (``mp_geometry``), give every block a detached copy (``mp_block_geometry``), sum the blocks' gradients on it
    and differentiate the geometry once at the end.
    """
    if keep_graph and max_edges is not None:
        raise ValueError("keep_graph evaluates each block in one call; it cannot be combined with max_edges")
    if not ranks:
        raise ValueError("no ranks")
    has_geometry = hasattr(module, "mp_geometry") and hasattr(module, "mp_block_geometry")
    if shared_geometry and not (keep_graph and has_geometry):
        raise ValueError("shared_geometry needs keep_graph and a module with mp_geometry and mp_block_geometry")
    shared_geometry = keep_graph and has_geometry if shared_geometry is None else shared_geometry
    n_total = int(sum(rg.n_local for rg in ranks))
    n_blocks = int(module.mp_num_blocks())
    centre_types = [rg.atom_type[:rg.n_local] for rg in ranks]
    forward_bytes = reverse_bytes = 0

    # forward: inputs of every block kept for the backward pass (the engine's per-block buffers)
    states, xs = [], []
    for rg in ranks:
        state, x = module.mp_embed(rg.atom_type, rg.n_local)
        states.append(state)
        xs.append(x)
    saved: List[Tuple[List[torch.Tensor], List[torch.Tensor], list]] = []
    # shared geometry: each rank's vectors (leaf), their geometry (with its graph) and its gradient summed over blocks
    geo_vecs = [rg.edge_vec.clone().requires_grad_(True) for rg in ranks] if shared_geometry else []
    geometry = [list(module.mp_geometry(v)) for v in geo_vecs]
    geo_grads: List[List[Optional[torch.Tensor]]] = [[None] * len(g) for g in geometry]
    for b in range(n_blocks):
        if b > 0:
            xs, moved = _forward_comm(ranks, xs)
            forward_bytes += moved
        graphs = []
        next_states, next_xs = [], []
        for r, rg in enumerate(ranks):
            if keep_graph:
                state_in = states[r].detach().requires_grad_(b > 0)
                x_in = xs[r].detach().requires_grad_(b > 0)
                if shared_geometry:
                    vec = [g.detach().requires_grad_(True) if g.requires_grad else g for g in geometry[r]]
                    s_next, x_next = module.mp_block_geometry(b, state_in, x_in, vec, rg.edge_index, centre_types[r])
                else:
                    vec = rg.edge_vec.clone().requires_grad_(True)
                    s_next, x_next = module.mp_block(b, state_in, x_in, vec, rg.edge_index, centre_types[r])
                graphs.append((state_in, x_in, vec, s_next, x_next))
            else:
                parts = []
                with torch.no_grad():
                    for c0, c1, e0, e1 in _chunks(rg, max_edges):
                        ei = rg.edge_index[:, e0:e1] - torch.tensor([[c0], [0]])
                        parts.append(module.mp_block(b, states[r][c0:c1], xs[r], rg.edge_vec[e0:e1], ei,
                                                     centre_types[r][c0:c1]))
                s_next = torch.cat([p[0] for p in parts])
                x_next = torch.cat([p[1] for p in parts])
            next_states.append(s_next.detach())
            next_xs.append(x_next.detach())
        saved.append((states, xs, graphs))
        states, xs = next_states, next_xs

    # readout, plus the short-range pair term on every rank's local-centred edges, per chunk as the blocks (a
    # chunk's edges keep their centre rows, so chunk [c0, c1) has n_centres = c1): energies added to the
    # readout's, edge gradients to the blocks'
    with_pair = hasattr(module, "mp_has_pair") and bool(module.mp_has_pair())
    atom_energy = torch.zeros(n_total, dtype=torch.float64)
    edge_grads = [torch.zeros_like(rg.edge_vec) for rg in ranks]
    grad_states, grad_xs = [], []
    for r, rg in enumerate(ranks):
        energy, grad = module.mp_readout(states[r], centre_types[r])
        if with_pair:
            energy = energy.clone()
            for c0, c1, e0, e1 in _chunks(rg, max_edges):
                pair_energy, pair_grad = module.mp_pair(rg.edge_vec[e0:e1], rg.edge_index[:, e0:e1], rg.atom_type, c1)
                energy[c0:c1] += pair_energy[c0:c1]
                edge_grads[r][e0:e1] += pair_grad
        atom_energy[torch.from_numpy(rg.local)] = energy
        grad_states.append(grad)
        grad_xs.append(grad.new_zeros((rg.n_local, 0)))

    # backward, block by block in reverse order
    for b in reversed(range(n_blocks)):
        block_states, block_xs, graphs = saved[b]
        input_grads = b > 0
        next_grad_states, grad_x_all = [], []
        for r, rg in enumerate(ranks):
            if keep_graph:
                state_in, x_in, vec, s_next, x_next = graphs[r]
                outputs, grads_out = [], []
                for out, g in ((s_next, grad_states[r]), (x_next, grad_xs[r])):
                    if out.requires_grad and out.numel() > 0:
                        outputs.append(out)
                        grads_out.append(g)
                geo = [k for k, g in enumerate(vec) if g.requires_grad] if shared_geometry else []
                inputs = [vec[k] for k in geo] if shared_geometry else [vec]
                n_vec = len(inputs)
                inputs += [state_in, x_in] if input_grads else []
                got = (torch.autograd.grad(outputs, inputs, grads_out, allow_unused=True) if outputs
                       else [None] * len(inputs))
                if shared_geometry:
                    for k, g in zip(geo, got[:n_vec]):
                        if g is not None:
                            geo_grads[r][k] = g if geo_grads[r][k] is None else geo_grads[r][k] + g
                else:
                    edge_grads[r] += torch.zeros_like(vec) if got[0] is None else got[0]
                g_state = g_x = None
                if input_grads:
                    g_state = torch.zeros_like(state_in) if got[n_vec] is None else got[n_vec]
                    g_x = torch.zeros_like(x_in) if got[n_vec + 1] is None else got[n_vec + 1]
            else:
                g_state_parts = []
                g_x = torch.zeros_like(block_xs[r]) if input_grads else None
                for c0, c1, e0, e1 in _chunks(rg, max_edges):
                    ei = rg.edge_index[:, e0:e1] - torch.tensor([[c0], [0]])
                    gs, gx, gv = module.mp_block_vjp(b, block_states[r][c0:c1], block_xs[r], rg.edge_vec[e0:e1], ei,
                                                     centre_types[r][c0:c1], grad_states[r][c0:c1],
                                                     grad_xs[r][c0:c1], input_grads)
                    edge_grads[r][e0:e1] += gv
                    if input_grads:
                        g_state_parts.append(gs)
                        g_x += gx
                g_state = torch.cat(g_state_parts) if input_grads else None
            next_grad_states.append(g_state)
            grad_x_all.append(g_x)
        if input_grads:
            grad_xs, moved = _reverse_comm(ranks, grad_x_all)
            reverse_bytes += moved
            grad_states = next_grad_states

    # the geometry once, with the gradients the blocks left on it
    for r in range(len(geometry)):
        pairs = [(t, g) for t, g in zip(geometry[r], geo_grads[r]) if g is not None]
        if pairs:
            (g_vec,) = torch.autograd.grad([t for t, _ in pairs], [geo_vecs[r]], [g for _, g in pairs],
                                           allow_unused=True)
            if g_vec is not None:
                edge_grads[r] += g_vec

    forces = torch.zeros((n_total, 3), dtype=torch.float64)
    virial = torch.zeros((3, 3), dtype=torch.float64)
    atom_virial = torch.zeros((n_total if compute_atom_virial else 0, 3, 3), dtype=torch.float64)
    for r, rg in enumerate(ranks):
        f, w, aw = module.mp_edge_derivatives(rg.n_atoms, rg.edge_vec, edge_grads[r], rg.edge_index,
                                              compute_atom_virial)
        atom_of_row = torch.from_numpy(np.concatenate([rg.local, rg.ghost]).astype(np.int64))
        forces.index_add_(0, atom_of_row, f)
        virial += w
        if compute_atom_virial:
            atom_virial.index_add_(0, atom_of_row, aw)
    return ExchangeResult(atom_energy, forces, virial, atom_virial, forward_bytes, reverse_bytes)
