"""The memory of one model call, measured when a model is deployed: the optional metadata key ``bytes_per_edge``
(``docs/contract.md``) that LAMMPS's ``pair_style mdpot max_edges auto`` divides its memory budget by.

One whole-graph call of the contract ``forward`` (energies, forces and virial through autograd, no per-atom virial;
TorchScript's profiling executor off, as the pair style runs it) runs on a probe graph under torch's profiler, which records every allocation of torch's CPU allocator; the peak of
the bytes allocated during the call, over the probe's edges, is the value. The probe is FCC of the model's first
element with its lattice scaled to ``r_max`` so that every atom has 42 neighbours, as FCC Cu (a = 3.61 Å) has
within 5 Å: 108 atoms, 4 536 edges. Its fixed costs (per call, not per edge) are below 1 % of the peak for the
benchmark models. Measure a module that has not yet run with TorchScript's profiling executor on (deploy measures
right after compiling): once it has, its calls allocate differently even with the executor off (20 % more, measured
for a small NequIP). What the peak does not hold: the model's weights, the caller's own buffers, and the allocator's
slack (glibc keeps freed memory: a process's resident memory is above it).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

import torch
from torch import nn

#: FCC lattice constant of the probe over r_max: FCC Cu at 5 Å (a = 3.61 Å, 42 neighbours per atom).
PROBE_LATTICE_OVER_R_MAX = 3.61 / 5.0
#: FCC cells per side of the probe.
PROBE_CELLS = 3
#: Random displacements of the probe's atoms (Å, as a fraction of r_max): every pair then has its own length, as in
#: MD. A perfect lattice has a handful of distinct lengths, so a model that evaluates its radial network once per
#: distinct length (NequIP with the fused kernels) would look far cheaper per edge than it is.
PROBE_RATTLE_OVER_R_MAX = 0.02 / 5.0


def _allocation_peak(call) -> int:
    """Peak bytes allocated by torch's CPU allocator during ``call()`` above what was allocated before it."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    # kineto prints two lines to the process's stderr on every start and stop: keep them out of deploy's output
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                    call()
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node.children)

    nodes = sorted((n for n in walk(prof.profiler.kineto_results.experimental_event_tree())
                    if n.tag == _EventType.Allocation and n.extra_fields.device.type == "cpu"),
                   key=lambda n: n.start_time_ns)
    if not nodes:
        return 0
    # total_allocated: the allocator's running total after each event
    before = nodes[0].extra_fields.total_allocated - nodes[0].extra_fields.alloc_size
    return max(n.extra_fields.total_allocated for n in nodes) - before


def bytes_per_edge(module: nn.Module, elements: Sequence[str], r_max: float) -> float:
    """Peak bytes that one call of ``module`` (a contract ``forward``: scripted, eager or a loaded package) allocates
    per edge on the probe graph, rounded to a whole byte."""
    from ..data import TypeMapper, atoms_to_graph
    from ..testing import fcc

    atoms = fcc(elements[0], (PROBE_CELLS,) * 3, a=PROBE_LATTICE_OVER_R_MAX * r_max,
                rattle=PROBE_RATTLE_OVER_R_MAX * r_max)
    g = atoms_to_graph(atoms, r_max, TypeMapper(tuple(elements)))
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, False)
    with torch.jit.optimized_execution(False):  # as the pair style and the calculator run it (jit_optimize no)
        peak = _allocation_peak(lambda: module(*args))
    return float(round(peak / max(g.num_edges, 1)))
