"""The fused tensor-product operators (``mdpot.ops``) against the pure-torch reference, on benchmark shapes.

Each tensor product of two benchmark models, on the real graph of an FCC Cu cell, with random inputs of the
shapes the model hands over, one torch thread:

- NequIP, l_max 2, 3 layers, 32 features, r_max 5 Å (42 edges per atom), 864 atoms: each block's convolution
  (``ChannelwiseTensorProduct.convolve``: gather, weighted product, scatter into centres);
- Allegro, l_max 1, 2 layers, 32 scalar / 16 tensor features, r_max 6 Å (78 edges per atom), 4000 atoms: each
  layer's product with the centre's environment (``gather_product``);
- issue 12's realistic Allegro, l_max 2, 64 scalar / 32 tensor features, r_max 5 Å, on one cache-sized call's
  edges (``--allegro-l2-edges``, default 1431: the first centres of 2048 atoms, what the calculator gives one call
  of this model on the CPU), each layer's ``gather_product``.

Forward alone and forward + backward (gradients of every input, what forces need), reference and fused timed
interleaved (A B A B ...), best of ``--repeats`` each.

    python scripts/bench_fused.py [--dtype float32] [--repeats 5] [--models nequip allegro allegro-l2]
Writes docs/benchmarks/bench_fused<TAG>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nequip-atoms", type=int, default=864)
    parser.add_argument("--allegro-atoms", type=int, default=4000)
    parser.add_argument("--allegro-l2-edges", type=int, default=1431,
                        help="edges of the realistic Allegro's call (its cache-sized max_edges)")
    parser.add_argument("--models", nargs="+", choices=("nequip", "allegro", "allegro-l2"),
                        default=["nequip", "allegro", "allegro-l2"], help="which models' products to time")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    if args.allegro_l2_edges < 1:
        parser.error(f"--allegro-l2-edges must be a positive edge count, got {args.allegro_l2_edges}")

    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot.models import AllegroConfig, NequIPConfig, build_model
    from mdpot.ops import load_ops
    from mdpot.testing import fcc

    load_ops()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)

    def graph(n_atoms, r_max):
        cells = max(2, round((n_atoms / 4) ** (1 / 3)))
        atoms = fcc("Cu", (cells,) * 3, rattle=0.02, seed=0)
        g = atoms_to_graph(atoms, r_max, TypeMapper(("Cu",)))
        return len(atoms), g.edge_index

    cases = []
    if "nequip" in args.models:
        nequip = build_model(NequIPConfig(elements=("Cu",), r_max=5.0, l_max=2, num_layers=3, num_features=32,
                                          avg_num_neighbors=42.0), seed=0)
        n, edge_index = graph(args.nequip_atoms, 5.0)
        e, u = edge_index.shape[1], 32
        for b, block in enumerate(nequip.blocks):
            tp = block.tp
            x = torch.randn(n, block.x_dim * u, dtype=dtype, generator=gen).reshape(n, block.x_dim, u).permute(1, 0, 2)
            y = torch.randn(9, e, 1, dtype=dtype, generator=gen)
            y[0] = 1.0
            w = torch.randn(e, tp.num_paths * u, dtype=dtype, generator=gen)
            cases.append((f"NequIP l_max 2, block {b} ({block.x_dim}->{tp.dim_out} components, {tp.num_paths} paths)",
                          tp, lambda tp, x, y, w, ei=edge_index, n=n: tp.convolve(x, y, w, ei[0], ei[1], n), [x, y, w],
                          n, e))
    if "allegro" in args.models:
        allegro = build_model(AllegroConfig(elements=("Cu",), r_max=6.0, l_max=1, num_layers=2, num_scalar_features=32,
                                            num_tensor_features=16, avg_num_neighbors=78.0), seed=0)
        n, edge_index = graph(args.allegro_atoms, 6.0)
        e, u = edge_index.shape[1], 16
        for k, layer in enumerate(allegro.layers):
            tp = layer.tp
            v = torch.randn(max(tp.term_i) + 1, e, u, dtype=dtype, generator=gen)
            env = torch.randn(max(tp.term_j) + 1, n, u, dtype=dtype, generator=gen)
            cases.append((f"Allegro l_max 1, layer {k} ({v.shape[0]}->{tp.dim_out} components)", tp,
                          lambda tp, v, env, c=edge_index[0]: tp.gather_product(v, env, c), [v, env], n, e))

    if "allegro-l2" in args.models:
        allegro = build_model(AllegroConfig(elements=("Cu",), r_max=5.0, l_max=2, num_layers=2,
                                            num_scalar_features=64, num_tensor_features=32), seed=0)
        n, edge_index = graph(2048, 5.0)
        # the first centres whose edges fit the call, as the calculator splits a graph
        counts = torch.bincount(edge_index[0], minlength=n)
        n_centres = max(1, int((counts.cumsum(0) <= args.allegro_l2_edges).sum()))
        edge_index = edge_index[:, edge_index[0] < n_centres]
        e, u = edge_index.shape[1], 32
        for k, layer in enumerate(allegro.layers):
            tp = layer.tp
            v = torch.randn(max(tp.term_i) + 1, e, u, dtype=dtype, generator=gen)
            env = torch.randn(max(tp.term_j) + 1, n_centres, u, dtype=dtype, generator=gen)
            cases.append((f"Allegro l_max 2, 64/32 features, layer {k} ({v.shape[0]}->{tp.dim_out} components), "
                          f"one call", tp, lambda tp, v, env, c=edge_index[0]: tp.gather_product(v, env, c), [v, env],
                          n_centres, e))

    def timed(tp, fn, inputs, fused, backward):
        tp.fused = fused
        leaves = [t.detach().requires_grad_(backward) for t in inputs]
        t0 = time.perf_counter()
        out = fn(tp, *leaves)
        if backward:
            torch.autograd.grad([out], leaves, [torch.ones_like(out)])
        return time.perf_counter() - t0

    rows = []
    load_before = os.getloadavg()
    for name, tp, fn, inputs, n, e in cases:
        row = {"case": name, "atoms": n, "edges": e}
        for backward in (False, True):
            best = {False: float("inf"), True: float("inf")}
            for _ in range(args.repeats):
                for fused in (False, True):
                    best[fused] = min(best[fused], timed(tp, fn, inputs, fused, backward))
            key = "fwd_bwd" if backward else "fwd"
            row[f"{key}_reference_s"], row[f"{key}_fused_s"] = best[False], best[True]
            row[f"{key}_speedup"] = best[False] / best[True]
        tp.fused = False
        rows.append(row)
        print(f"{name}: forward {row['fwd_reference_s'] * 1e3:.1f} -> {row['fwd_fused_s'] * 1e3:.1f} ms "
              f"({row['fwd_speedup']:.2f}x), forward+backward {row['fwd_bwd_reference_s'] * 1e3:.1f} -> "
              f"{row['fwd_bwd_fused_s'] * 1e3:.1f} ms ({row['fwd_bwd_speedup']:.2f}x)", file=sys.stderr, flush=True)

    results = {"dtype": args.dtype, "threads": 1, "repeats": args.repeats, "torch": torch.__version__,
               "machine": platform.machine(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_fused{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Fused tensor-product kernels vs the reference{args.tag}", "",
             "`python scripts/bench_fused.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             f"{args.dtype}, 1 torch thread, reference and fused interleaved, best of {args.repeats} each; torch "
             f"{torch.__version__}. Random inputs of the models' shapes on FCC Cu graphs; forward + backward takes the "
             "gradients of every input (what forces need). Load average (1, 5, 15 min) before → after: "
             f"{' '.join(f'{v:.2f}' for v in load_before)} → {' '.join(f'{v:.2f}' for v in os.getloadavg())}.", "",
             "| product | atoms | edges | fwd ref ms | fwd fused ms | × | fwd+bwd ref ms | fwd+bwd fused ms | × |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['atoms']} | {r['edges']} | {r['fwd_reference_s'] * 1e3:.1f} | "
                     f"{r['fwd_fused_s'] * 1e3:.1f} | {r['fwd_speedup']:.2f} | {r['fwd_bwd_reference_s'] * 1e3:.1f} | "
                     f"{r['fwd_bwd_fused_s'] * 1e3:.1f} | {r['fwd_bwd_speedup']:.2f} |")
    lines.append("")
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
