"""The model contract: one forward that every engine (ASE, LAMMPS, tests) calls with the same meaning.

See ``docs/contract.md``. The energy model maps edge vectors to per-atom energies; this wrapper forms the
edge vectors in float64, runs the model in its own dtype and derives forces and virials from one autograd
pass over the edge vectors, then returns everything in float64.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..nn.repulsion import ZBLRepulsion


def edge_derivatives(pos: torch.Tensor, vec64: torch.Tensor, grad: torch.Tensor, edge_index: torch.Tensor,
                     compute_atom_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contract's derivatives from ``grad = dE/dr_ij`` per edge (float64, ``[E, 3]``), ``r_ij = vec64``:
    forces ``[N, 3]`` (eV/Å, ``-dE/dpos``: ``+grad`` on the centre, ``-grad`` on the neighbour), virial ``[3, 3]``
    (eV, ``-sum_e r_e (x) grad_e``) and the per-atom virial ``[N, 3, 3]`` (each edge's term split half to ``i``,
    half to ``j``), or ``[0, 3, 3]`` when not asked for. Shared by every contract module (mdpot's own, wrapped)."""
    forces = torch.zeros_like(pos)
    forces = forces.index_add(0, edge_index[0], grad).index_add(0, edge_index[1], -grad)
    virial = -(vec64.t() @ grad)
    if compute_atom_virial:
        half = -0.5 * vec64.unsqueeze(2) * grad.unsqueeze(1)
        atom_virial = torch.zeros((pos.shape[0], 3, 3), dtype=torch.float64, device=pos.device)
        atom_virial = atom_virial.index_add(0, edge_index[0], half).index_add(0, edge_index[1], half)
    else:
        atom_virial = torch.zeros((0, 3, 3), dtype=torch.float64, device=pos.device)
    return forces, virial, atom_virial


class Potential(nn.Module):
    """Wraps an energy model (``Allegro``, ``NequIP``) into the mdpot model contract.

    Forward
    -------
    pos : Tensor [N, 3] float64, Å
    atom_type : Tensor [N] int64
    edge_index : Tensor [2, E] int64, directed edges (centre i, neighbour j)
    edge_shift : Tensor [E, 3] float64, Å; ``r_ij = pos[j] - pos[i] + edge_shift``
    n_local : int, only the first ``n_local`` atoms' energies count
    compute_atom_virial : bool

    Returns ``(atom_energy [n_local] eV, forces [N, 3] eV/Å, virial [3, 3] eV, atom_virial [N, 3, 3] eV or
    [0, 3, 3])``, all float64. ``virial = -sum_e r_e (x) dE/dr_e``; ASE stress is ``-virial / volume``.

    Example
    -------
    >>> from mdpot.models import Allegro, AllegroConfig
    >>> pot = Potential(Allegro(AllegroConfig(elements=("Cu",))))
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Per-element reference energies are added in float64: with DFT-sized shifts (eV to keV per atom) a
        # float32 sum would lose the small energy differences that forces and MD depend on.
        self.register_buffer("energy_shift", torch.tensor(model.config.per_element_energy_shift, dtype=torch.float64))
        # The optional short-range repulsion (model.repulsion) is a fixed pair term in float64, outside the learned
        # model and its dtype; without one, a zero-pair placeholder keeps the module scriptable and is never run.
        config = model.config
        self.has_repulsion: bool = getattr(config, "repulsion", None) is not None
        radii = config.repulsion_radii() if self.has_repulsion else ([[1.0]], [[2.0]])
        self.repulsion = ZBLRepulsion(config.elements if self.has_repulsion else ["H"], radii[0], radii[1])
        # Training needs a differentiable force; MD and deployment do not (cheaper backward).
        self.create_graph = False

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                n_local: int, compute_atom_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = self.model.energy_scale.dtype
        vec64 = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + edge_shift
        vec = vec64.to(dtype).detach().requires_grad_(True)
        atom_energy = self.model(vec, edge_index, atom_type, n_local)[:n_local]
        grad = torch.autograd.grad([atom_energy.sum()], [vec], create_graph=self.create_graph, allow_unused=True)[0]
        if grad is None:  # no edges reached a local atom
            grad = torch.zeros_like(vec)
        grad = grad.to(torch.float64)
        if not self.create_graph:
            atom_energy = atom_energy.detach()
        atom_energy = atom_energy.to(torch.float64) + self.energy_shift.index_select(0, atom_type[:n_local])
        if self.has_repulsion:
            pair_energy, pair_grad = self.pair_term(vec64, edge_index, atom_type, n_local)
            atom_energy = atom_energy + pair_energy
            grad = grad + pair_grad
        forces, virial, atom_virial = edge_derivatives(pos, vec64, grad, edge_index, compute_atom_virial)
        return atom_energy, forces, virial, atom_virial

    def pair_term(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor,
                  n_centres: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The short-range repulsion: per-atom energy ``[n_centres]`` and ``dE/dr_ij [E, 3]``, float64."""
        vec = edge_vec.detach().requires_grad_(True)
        energy = self.repulsion(vec, edge_index, atom_type, n_centres)
        grad = torch.autograd.grad([energy.sum()], [vec], allow_unused=True)[0]
        if grad is None:
            grad = torch.zeros_like(vec)
        return energy.detach(), grad


class MessagePassingPotential(Potential):
    """:class:`Potential` of a message-passing energy model (``NequIP``), with the block-by-block methods an
    engine needs to exchange node features between ranks instead of widening its ghost shell
    (``docs/message_passing_exchange.md``). ``forward`` is :class:`Potential`'s, unchanged.

    Per-atom tensors are rows ``[atoms, width]`` in the model dtype; positions, edge vectors, their gradients and
    energies cross in float64, as in ``forward``. ``L = mp_num_blocks()``; block ``b`` reads the state ``[C, S_b]``
    of its ``C`` centre atoms and the mixed input ``x_b [N, W_b]`` of every atom its edges reach
    (``W = mp_feature_widths()``, ``S = mp_state_widths()``); only ``x_b`` is exchanged between ranks.

    Example
    -------
    >>> from mdpot.models import NequIP, NequIPConfig
    >>> pot = MessagePassingPotential(NequIP(NequIPConfig(elements=("Cu",))))
    >>> pot.mp_num_blocks()
    2
    """

    @torch.jit.export
    def mp_num_blocks(self) -> int:
        """``L``, the number of message-passing blocks."""
        return self.model.mp_num_blocks()

    @torch.jit.export
    def mp_feature_widths(self) -> List[int]:
        """``[W_0 .. W_{L-1}]``: values per atom of each block's mixed input, the exchanged features."""
        return self.model.mp_feature_widths()

    @torch.jit.export
    def mp_state_widths(self) -> List[int]:
        """``[S_0 .. S_L]``: values per atom of the state before each block and after the last."""
        return self.model.mp_state_widths()

    @torch.jit.export
    def mp_embed(self, atom_type: torch.Tensor, n_centres: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``atom_type [N]`` int64 -> (state ``[n_centres, S_0]`` of the first ``n_centres`` atoms, mixed input
        ``x_0 [N, W_0]`` of all atoms). Functions of the types alone: ghosts need no exchange before block 0,
        and nothing flows back into them."""
        return self.model.mp_embed(atom_type, n_centres)

    @torch.jit.export
    def mp_block(self, b: int, state: torch.Tensor, x: torch.Tensor, edge_vec: torch.Tensor,
                 edge_index: torch.Tensor, centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Block ``b`` on ``C`` centres.

        ``state [C, S_b]``; ``x [N, W_b]`` (every row an edge reads must hold its atom's ``x_b``);
        ``edge_vec [E, 3]`` float64, Å, ``r_ij = pos_j - pos_i`` (the neighbour at its image position);
        ``edge_index [2, E]`` int64, centre ``0 .. C-1`` and neighbour row of ``x``; ``centre_type [C]`` int64.
        Returns (state ``[C, S_{b+1}]``, ``x_{b+1} [C, W_{b+1}]``; ``[C, 0]`` after the last block).
        Differentiable: an engine that keeps the autograd graph calls it with gradients enabled and inputs
        that require them, and differentiates the outputs itself (same numbers as :meth:`mp_block_vjp`)."""
        dtype = self.model.energy_scale.dtype
        return self.model.mp_block(b, state, x, edge_vec.to(dtype), edge_index, centre_type)

    @torch.jit.export
    def mp_geometry(self, edge_vec: torch.Tensor) -> List[torch.Tensor]:
        """``edge_vec [E, 3]`` float64 (Å) -> what every block reads of these edges (model dtype; opaque to the
        engine), differentiable w.r.t. ``edge_vec``. Optional (files from this version on): an engine that keeps
        the autograd graph computes it once per step and passes it to :meth:`mp_block_geometry` for every block,
        instead of every block recomputing it from the vectors; it differentiates each block w.r.t. the tensors
        of the list that require gradients, sums those over the blocks, and differentiates this call once."""
        dtype = self.model.energy_scale.dtype
        return self.model.mp_geometry(edge_vec.to(dtype))

    @torch.jit.export
    def mp_block_geometry(self, b: int, state: torch.Tensor, x: torch.Tensor, geometry: List[torch.Tensor],
                          edge_index: torch.Tensor, centre_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mp_block` with the edges given as :meth:`mp_geometry` of their vectors: the same outputs."""
        return self.model.mp_block_geometry(b, state, x, geometry, edge_index, centre_type)

    @torch.jit.export
    def mp_block_vjp(self, b: int, state: torch.Tensor, x: torch.Tensor, edge_vec: torch.Tensor,
                     edge_index: torch.Tensor, centre_type: torch.Tensor, grad_state: torch.Tensor,
                     grad_x: torch.Tensor, input_grads: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vector-Jacobian product of :meth:`mp_block` (same inputs), recomputing the block: given the gradients
        of the energy w.r.t. its outputs, ``grad_state [C, S_{b+1}]`` and ``grad_x [C, W_{b+1}]``, returns those
        w.r.t. ``state [C, S_b]`` and ``x [N, W_b]`` (model dtype; ``[0, ...]`` unless ``input_grads``: block 0's
        inputs are functions of the types) and w.r.t. ``edge_vec`` (``[E, 3]`` float64, eV/Å). Like ``forward``, it
        must be called with gradients enabled (TorchScript cannot enable them itself)."""
        dtype = self.model.energy_scale.dtype
        vec = edge_vec.to(dtype).detach().requires_grad_(True)
        state_in = state.detach().requires_grad_(input_grads)
        x_in = x.detach().requires_grad_(input_grads)
        state_next, x_next = self.model.mp_block(b, state_in, x_in, vec, edge_index, centre_type)
        outputs: List[torch.Tensor] = []
        grad_outputs: List[Optional[torch.Tensor]] = []
        for out, grad in ((state_next, grad_state), (x_next, grad_x)):
            if out.requires_grad and out.numel() > 0:
                outputs.append(out)
                grad_outputs.append(grad.to(dtype))
        inputs = [vec, state_in, x_in] if input_grads else [vec]
        grads: List[Optional[torch.Tensor]] = [None, None, None]
        if len(outputs) > 0:
            grads = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)
        g_vec = grads[0]
        g_vec = torch.zeros_like(edge_vec) if g_vec is None else g_vec.to(torch.float64)
        g_state = state.new_zeros((0, state.shape[1]))
        g_x = x.new_zeros((0, x.shape[1]))
        if input_grads:
            g = grads[1]
            g_state = torch.zeros_like(state) if g is None else g
            g = grads[2]
            g_x = torch.zeros_like(x) if g is None else g
        return g_state, g_x, g_vec

    @torch.jit.export
    def mp_readout(self, state: torch.Tensor, atom_type: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``state [n, S_L]`` after the last block and ``atom_type [n]`` -> (per-atom energy ``[n]`` float64, eV,
        shift included: with :meth:`mp_pair`'s energy, ``forward``'s ``atom_energy`` for these atoms; its gradient
        w.r.t. the state ``[n, S_L]``, model dtype, which starts the backward pass)."""
        state_in = state.detach().requires_grad_(True)
        learned = self.model.mp_readout(state_in, atom_type)
        grad: Optional[torch.Tensor] = None
        if learned.requires_grad:
            grad = torch.autograd.grad([learned.sum()], [state_in], allow_unused=True)[0]
        grad_state = torch.zeros_like(state) if grad is None else grad
        atom_energy = learned.detach().to(torch.float64) + self.energy_shift.index_select(0, atom_type)
        return atom_energy, grad_state

    @torch.jit.export
    def mp_has_pair(self) -> bool:
        """Whether the model has a short-range pair term (``model.repulsion``) that :meth:`mp_pair` adds."""
        return self.has_repulsion

    @torch.jit.export
    def mp_pair(self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor,
                n_centres: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The short-range pair term (``model.repulsion``) on the edges of ``n_centres`` centre atoms:
        ``edge_vec [E, 3]`` float64 (Å), ``edge_index [2, E]`` (centre ``0 .. n_centres-1``, neighbour row),
        ``atom_type [N]`` of every row -> (per-atom energy ``[n_centres]``, ``dE/dr_ij [E, 3]``), float64. The engine
        adds the energy to :meth:`mp_readout`'s and the gradient to the blocks' edge gradients; zeros when the model
        has no such term (:meth:`mp_has_pair`). Additive over edges, so it may run chunk by chunk, as long as each
        chunk keeps its edges' centre rows (unlike :meth:`mp_block`, whose centres start at 0): the call for
        centres ``c0 .. c1-1`` passes ``n_centres = c1`` and uses rows ``c0 ..`` of the energies."""
        if not self.has_repulsion:
            return (torch.zeros(n_centres, dtype=torch.float64, device=edge_vec.device),
                    torch.zeros_like(edge_vec))
        return self.pair_term(edge_vec, edge_index, atom_type, n_centres)

    @torch.jit.export
    def mp_edge_derivatives(self, n_atoms: int, edge_vec: torch.Tensor, edge_grad: torch.Tensor,
                            edge_index: torch.Tensor, compute_atom_virial: bool
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forces ``[n_atoms, 3]``, virial ``[3, 3]`` and per-atom virial ``[n_atoms, 3, 3]`` (or ``[0, 3, 3]``),
        float64, from ``edge_grad = dE/dr_ij [E, 3]`` summed over the blocks: ``forward``'s conventions
        (:func:`edge_derivatives`); ``edge_index`` rows index the same ``n_atoms`` atoms."""
        pos = torch.zeros((n_atoms, 3), dtype=torch.float64, device=edge_vec.device)
        return edge_derivatives(pos, edge_vec, edge_grad, edge_index, compute_atom_virial)


def contract_potential(model: nn.Module) -> Potential:
    """The contract module of an energy model: :class:`MessagePassingPotential` when the model offers the
    block-by-block methods (``NequIP``), else :class:`Potential`."""
    if hasattr(model, "mp_block"):
        return MessagePassingPotential(model)
    return Potential(model)
