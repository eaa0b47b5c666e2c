"""Cost of the block-by-block methods (docs/message_passing_exchange.md) against one whole-graph forward.

The benchmark NequIP (Cu, r_max 5 Å, ``--layers`` blocks, ``--features`` channels, l_max ``--lmax``, fresh
weights, float32) on a periodic FCC Cu cell of about ``--atoms`` atoms, one torch thread:

- *bare*: the contract forward on the periodic graph (every atom local, no ghosts): the yardstick;
- *exchange*: the same atoms as one rank of ``mdpot.testing.exchange`` (ghosts within r_max + skin, periodic
  self-images filled by the exchange), timed per method: embed, each block forward, readout, each block's VJP,
  edge derivatives; once with the backward recomputing each block (``mp_block_vjp``, what chunking needs), once
  keeping each block's autograd graph. Communication is not included (Python copies here, not MPI).

Also reports the bytes per local atom and step the exchange would communicate (forward and reverse, L - 1
exchanges each, float32 features sent as float64 in LAMMPS's buffers and as float32 if packed two per double).

``--kernels reference,fused`` times the model with each implementation of the tensor products (``mdpot.ops``),
interleaved (A B A B ...), best of ``--repeats`` each.

    python scripts/bench_exchange.py --atoms 4000 --layers 3 --features 32 --repeats 2
Writes docs/benchmarks/bench_exchange<TAG>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=4000)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--lmax", type=int, default=1)
    parser.add_argument("--skin", type=float, default=2.0, help="LAMMPS neighbour skin, Å (metal default 2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kernels", default="reference",
                        help="comma-separated tensor-product kernels to compare: reference, fused (default reference)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)

    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot.deploy import eager_model
    from mdpot.models import NequIPConfig, build_model
    from mdpot.testing import fcc
    from mdpot.testing.exchange import decompose

    torch.set_num_threads(1)
    config = NequIPConfig(elements=("Cu",), r_max=5.0, l_max=args.lmax, num_layers=args.layers,
                          num_features=args.features, avg_num_neighbors=42.0)
    from mdpot.ops import set_kernels

    kernels = args.kernels.split(",")
    modules = {}
    for k in kernels:
        loaded = eager_model(build_model(config, seed=0), "float32")
        set_kernels(loaded.module, k)
        modules[k] = torch.jit.script(loaded.module)
    module = modules[kernels[0]]
    cells = max(2, round((args.atoms / 4) ** (1 / 3)))
    atoms = fcc("Cu", (cells,) * 3, rattle=0.02, seed=0)
    n = len(atoms)
    graph = atoms_to_graph(atoms, config.r_max, TypeMapper(config.elements))
    print(f"{n} atoms, {graph.num_edges} edges ({graph.num_edges / n:.1f} per atom)", file=sys.stderr, flush=True)
    rg = decompose(atoms, (1, 1, 1), config.r_max, config.elements, skin=args.skin)[0]
    assert rg.edge_index.shape[1] == graph.num_edges
    ghosts = len(rg.ghost)
    centre_type = rg.atom_type[:n]
    L = module.mp_num_blocks()
    widths = module.mp_feature_widths()
    results = {"atoms": n, "edges": graph.num_edges, "ghosts": ghosts, "layers": L, "features": args.features,
               "l_max": args.lmax, "skin": args.skin, "feature_widths": widths,
               "state_widths": module.mp_state_widths(), "torch": torch.__version__, "threads": 1,
               "kernels": kernels}

    with torch.jit.optimized_execution(False):
        def bare(module):
            module(graph.pos, graph.atom_type, graph.edge_index, graph.edge_shift, n, False)

        for k in kernels:
            bare(modules[k])
        best = {k: float("inf") for k in kernels}
        for _ in range(args.repeats):
            for k in kernels:
                best[k] = min(best[k], best_of(lambda: bare(modules[k]), 1))
        for k in kernels:
            results.setdefault(k, {})["bare_s"] = best[k]
            print(f"{k}: bare forward {best[k]:.3f} s", file=sys.stderr, flush=True)

        def fill_ghosts(x_local):
            return torch.cat([x_local, x_local.index_select(0, torch.from_numpy(rg.owner_row))])

        timings = {}

        def tick(name, t0):
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        def exchange(module, keep_graph):
            t0 = time.perf_counter()
            state, x = module.mp_embed(rg.atom_type, n)
            tick("embed", t0)
            saved = []
            for b in range(L):
                if b > 0:
                    x = fill_ghosts(x)
                t0 = time.perf_counter()
                if keep_graph:
                    s_in = state.detach().requires_grad_(b > 0)
                    x_in = x.detach().requires_grad_(b > 0)
                    vec = rg.edge_vec.clone().requires_grad_(True)
                    s_next, x_next = module.mp_block(b, s_in, x_in, vec, rg.edge_index, centre_type)
                    saved.append((s_in, x_in, vec, s_next, x_next))
                else:
                    with torch.no_grad():
                        s_next, x_next = module.mp_block(b, state, x, rg.edge_vec, rg.edge_index, centre_type)
                    saved.append((state, x))
                tick(f"block{b}", t0)
                state, x = s_next.detach(), x_next.detach()
            t0 = time.perf_counter()
            _, g_state = module.mp_readout(state, centre_type)
            tick("readout", t0)
            g_x = g_state.new_zeros((n, 0))
            edge_grad = torch.zeros_like(rg.edge_vec)
            for b in reversed(range(L)):
                t0 = time.perf_counter()
                if keep_graph:
                    s_in, x_in, vec, s_next, x_next = saved[b]
                    outs = [s_next] + ([x_next] if x_next.numel() else [])
                    grads = [g_state] + ([g_x] if x_next.numel() else [])
                    inputs = [vec, s_in, x_in] if b > 0 else [vec]
                    got = torch.autograd.grad(outs, inputs, grads)
                    edge_grad += got[0]
                    if b > 0:
                        g_state, g_x_all = got[1], got[2]
                else:
                    s_b, x_b = saved[b]
                    g_state, g_x_all, g_vec = module.mp_block_vjp(b, s_b, x_b, rg.edge_vec, rg.edge_index, centre_type,
                                                                  g_state, g_x, b > 0)
                    edge_grad += g_vec
                tick(f"vjp{b}", t0)
                if b > 0:
                    g_x = g_x_all[:n].index_add(0, torch.from_numpy(rg.owner_row), g_x_all[n:])
            t0 = time.perf_counter()
            module.mp_edge_derivatives(rg.n_atoms, rg.edge_vec, edge_grad, rg.edge_index, False)
            tick("edge_derivatives", t0)

        for keep in (False, True):
            name = "keep_graph" if keep else "recompute"
            for k in kernels:
                exchange(modules[k], keep)
            best = {k: (float("inf"), None) for k in kernels}
            for _ in range(args.repeats):
                for k in kernels:
                    timings.clear()
                    t0 = time.perf_counter()
                    exchange(modules[k], keep)
                    total = time.perf_counter() - t0
                    if total < best[k][0]:
                        best[k] = (total, dict(timings))
            for k in kernels:
                results[k][f"{name}_s"], results[k][f"{name}_parts_s"] = best[k]
                print(f"{k}: exchange ({name}) {best[k][0]:.3f} s = {best[k][0] / results[k]['bare_s']:.2f} x bare; "
                      f"{best[k][1]}", file=sys.stderr, flush=True)
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    # bytes per local atom and step: L - 1 exchanges each way of every ghost row (one rank: all are self-images)
    values = ghosts * sum(widths[1:])
    results["ghosts_per_atom"] = ghosts / n
    results["values_per_atom_step_each_way"] = values / n
    results["bytes_per_atom_step_as_double"] = 2 * 8 * values / n
    results["bytes_per_atom_step_as_float32"] = 2 * 4 * values / n

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_exchange{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# Block methods vs whole-graph forward{args.tag}", "",
        f"`python scripts/bench_exchange.py --atoms {args.atoms} --layers {args.layers} --features {args.features} "
        f"--lmax {args.lmax} --skin {args.skin:g} --repeats {args.repeats} --kernels {args.kernels}`", "",
        f"NequIP Cu, l_max {args.lmax}, {L} layers, {args.features} features, r_max 5 Å, float32, fresh weights; "
        f"FCC Cu, {n} atoms, {graph.num_edges / n:.1f} edges per atom; one rank with ghosts within r_max + "
        f"{args.skin:g} Å ({ghosts / n:.2f} per local atom, all periodic self-images); 1 torch thread, best of "
        f"{args.repeats}{', kernels interleaved' if len(kernels) > 1 else ''}; torch {torch.__version__}.", "",
    ]
    first = results[kernels[0]]
    for k in kernels:
        r = results[k]
        vs = f" | × {kernels[0]}" if len(kernels) > 1 else ""
        lines += [f"Kernels: {k}.", "", f"| path | s | × bare{vs} |", "|---|---|---|" + ("---|" if vs else ""),
                  f"| bare: contract forward, periodic graph | {r['bare_s']:.3f} | 1.00" +
                  (f" | {first['bare_s'] / r['bare_s']:.2f}" if vs else "") + " |"]
        for name in ("recompute", "keep_graph"):
            lines.append(f"| exchange, {name.replace('_', ' ')} | {r[name + '_s']:.3f} | "
                         f"{r[name + '_s'] / r['bare_s']:.2f}" +
                         (f" | {first[name + '_s'] / r[name + '_s']:.2f}" if vs else "") + " |")
        lines += ["", "Parts (s):", "", "| part | recompute | keep graph |", "|---|---|---|"]
        for part in r["recompute_parts_s"]:
            lines.append(f"| {part} | {r['recompute_parts_s'][part]:.3f} | {r['keep_graph_parts_s'].get(part, 0):.3f} |")
        lines.append("")
    lines += [f"Exchanged widths per block (values per atom): {widths} (block 0's is never sent: ghosts embed "
              f"themselves). Per local atom and step, both directions: {results['bytes_per_atom_step_as_double']:.0f} "
              f"bytes as doubles, {results['bytes_per_atom_step_as_float32']:.0f} as packed float32. "
              f"Peak RSS {results['peak_rss_gb']:.2f} GB.", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
