#!/usr/bin/env python
"""Models of the nequip package through nequip's own ASE calculator and through mdpot (``mdpot deploy``).

The same nequip-built network (fresh weights, benchmark widths: Allegro l_max 1, 2 layers, 32 scalar / 16 tensor
features; NequIP l_max 1, 2 layers, 32 features; r_max 5 Å, float32) is timed on FCC Cu through
``nequip.integrations.ase.NequIPCalculator`` (its ``.nequip.pth``) and through ``MDPotCalculator`` (the file
``mdpot deploy`` wrote from it): energy + forces, neighbour lists included, both in one process with the same
threads and allocator state, interleaved A B A B, best of each. That difference is the framework's overhead
around the identical network. ``--lammps`` also runs ``scripts/bench_lammps.py`` on the wrapped Allegro and on
mdpot's own Allegro of the same widths (4000 atoms, 1 and 2 ranks).

Writes ``docs/benchmarks/nequip_interop.{json,md}``. Needs nequip==0.19.1 and nequip-allegro==0.8.3.

``--issue11``: issue 11's comparison with the nequip package's one-rank ``pair_style nequip``, by proxy (that pair
style needs a LAMMPS source build). On one rank it maps ghosts to local atoms and evaluates its model once on the
periodic graph, so the time of that model call (with its autograd forces; neighbour list excluded) is a lower bound
of its µs/atom/step. For each of the issue's two models (``ISSUE11_CASES``) the nequip package's own NequIP (fresh
weights, hyperparameters as close to mdpot's as its config allows) is compiled as its pair style loads it: TorchScript
(``.nequip.pth``, frozen, profiling executor on, as a C++ client gets by default) and AOTInductor with the
``pair_nequip`` target (``.nequip.pt2``); the faster is the bound. Interleaved with it, A B A B, best of each: mdpot's
NequIP of the same widths as the bare model on the same periodic graph and in LAMMPS (``pair_style mdpot``, 1 rank,
``message_passing exchange``). One torch thread throughout. Writes ``docs/benchmarks/nequip_pair_proxy.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "nequip_interop"
SIZES = {256: (4, 4, 4), 2048: (8, 8, 8), 8192: (16, 16, 8)}
#: Issue 11's two models: (label, layers, l_max, features, FCC cells per side -> atoms).
ISSUE11_CASES = (("2 layers, l_max 1, 16 features", 2, 1, 16, 10), ("3 layers, l_max 2, 32 features", 3, 2, 32, 6))
#: mdpot's NequIP hyperparameters as the nequip package's NequIPGNNModel spells them (NequIPConfig defaults:
#: radial MLP 2 x 64, readout MLP 1 x 16, 8 Bessels, p = 6, parity; avg_num_neighbors 42 as FCC Cu at 5 Å).
THEIR_HYPERPARAMETERS = dict(parity=True, radial_mlp_depth=2, radial_mlp_width=64, readout_mlp_hidden_layers_depth=1,
                             readout_mlp_hidden_layers_width=16, num_bessels=8, polynomial_cutoff_p=6,
                             avg_num_neighbors=42.0)


def _their_model(layers: int, l_max: int, features: int, r_max: float):
    from nequip.model import NequIPGNNModel

    return NequIPGNNModel(seed=1, model_dtype="float32", type_names=["Cu"], r_max=r_max, num_layers=layers, l_max=l_max,
                          num_features=features, per_type_energy_shifts={"Cu": -3.5}, per_type_energy_scales={"Cu": 1.0},
                          **THEIR_HYPERPARAMETERS)


def build_their_nequip(stem: str, layers: int, l_max: int, features: int, r_max: float) -> dict:
    """In a fresh process (nequip's global state is process-wide): the nequip package's NequIP with fresh weights,
    written as ``STEM.nequip.pth`` (their TorchScript export) and ``STEM.nequip.pt2`` (their AOTInductor export for
    the ``pair_nequip`` target, as ``nequip-compile --mode aotinductor --target pair_nequip`` does it)."""
    import torch
    from nequip.data import from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.model.inference_models.torchscript import save_torchscript_model
    from nequip.scripts._compile_utils import PAIR_NEQUIP_TARGET
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.scripts.compile import _AOT_METADATA_KEY, _COMPILE_SEED, _parse_bounds_to_Dim
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import NEQUIP_AOTI_INPUTS_KEY, NEQUIP_AOTI_OUTPUTS_KEY, serialize_aoti_keys
    from nequip.utils.global_state import get_latest_global_state, set_global_state

    from mdpot.testing import fcc

    set_workflow_state("compile")
    set_global_state(allow_tf32=False)

    def metadata_of(model) -> dict:
        meta = dict(model.metadata)
        for key, value in get_latest_global_state(only_metadata_related=True).items():
            meta[key] = ("1" if value else "0") if isinstance(value, bool) else value
        return meta

    model = _their_model(layers, l_max, features, r_max)
    parameters = sum(p.numel() for p in model.parameters())
    save_torchscript_model(model, metadata_of(model), stem + ".nequip.pth", torch.device("cpu"))

    model = _their_model(layers, l_max, features, r_max)
    data = from_ase(fcc("Cu", (3, 3, 3), a=3.61, rattle=0.01))
    data = NeighborListTransform(r_max=r_max)(ChemicalSpeciesToAtomTypeMapper(model_type_names=["Cu"])(data))
    batch_map = {"graph": _parse_bounds_to_Dim("num_frames", "2,inf"), "node": _parse_bounds_to_Dim("num_nodes", "2,inf"),
                 "edge": _parse_bounds_to_Dim("num_edges", "2,inf")}
    batch_map = PAIR_NEQUIP_TARGET["batch_map_settings"](batch_map)
    data = PAIR_NEQUIP_TARGET["data_settings"](data)
    meta = metadata_of(model)
    meta[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(PAIR_NEQUIP_TARGET["input"])
    meta[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(PAIR_NEQUIP_TARGET["output"])
    aot_export_model(model=model, device=torch.device("cpu"), input_fields=PAIR_NEQUIP_TARGET["input"],
                     output_fields=PAIR_NEQUIP_TARGET["output"], data=data, batch_map=batch_map,
                     output_path=stem + ".nequip.pt2",
                     inductor_configs={_AOT_METADATA_KEY: {k: str(v) for k, v in meta.items()}}, seed=_COMPILE_SEED)
    return {"parameters": parameters, "torchscript": stem + ".nequip.pth", "aoti": stem + ".nequip.pt2"}


def periodic_graph(cells: int, r_max: float):
    """FCC Cu (a = 3.61 Å, rattled 0.01 Å) of ``cells``³ cells: mdpot's contract inputs and nequip's input dict
    (integer cell shifts) of the same full periodic edge list."""
    import numpy as np
    import torch

    from mdpot.data import TypeMapper, atoms_to_graph
    from mdpot.testing import fcc

    atoms = fcc("Cu", (cells,) * 3, a=3.61, rattle=0.01)
    g = atoms_to_graph(atoms, r_max, TypeMapper(("Cu",)))
    cell = np.asarray(atoms.cell.array)
    shifts = np.rint(g.edge_shift.numpy() @ np.linalg.inv(cell))
    assert np.abs(shifts @ cell - g.edge_shift.numpy()).max() < 1e-9
    theirs = {"pos": g.pos.clone(), "edge_index": g.edge_index.clone(), "atom_types": g.atom_type.clone(),
              "cell": torch.from_numpy(cell.copy()).reshape(1, 3, 3), "edge_cell_shift": torch.from_numpy(shifts)}
    return g, theirs


def time_calls(call, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``call`` (after one untimed call)."""
    call()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def issue11(args) -> int:
    """The ``--issue11`` benchmark (module docstring)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_lammps import bench_config, deploy_bench_model, run_lammps_case
    from mdpot._malloc import tune_malloc
    from mdpot.deploy import load_model
    from mdpot.lammps.plugin import build_plugin
    from mdpot.models import build_model

    r_max = 5.0
    torch.set_num_threads(1)
    tune_malloc()  # as mdpot's pair style does; it can only make the nequip model faster, as a lower bound wants
    build_plugin()
    work = ROOT / "runs" / "bench_nequip_pair_proxy"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load_before = os.getloadavg()
    rows = []
    for label, layers, l_max, features, cells in ISSUE11_CASES:
        stem = str(work / f"nequip_L{layers}_l{l_max}_f{features}")
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--build-their", stem, str(layers),
                               str(l_max), str(features), str(r_max)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"building the nequip model failed: {proc.stderr.strip()[-3000:]}")
        their = json.loads(proc.stdout.strip().splitlines()[-1])
        config = bench_config("nequip", layers, features, l_max)
        # mdpot's file as `mdpot deploy` writes it (fused kernels), or the pure-torch one with --kernels reference
        ours = deploy_bench_model(work, config, fmt="fused" if args.kernels == "fused" else "torchscript")
        ours_params = sum(p.numel() for p in build_model(config, seed=0).parameters())
        loaded = load_model(ours)
        g, inputs = periodic_graph(cells, r_max)
        n = g.num_atoms

        ts = torch.jit.freeze(torch.jit.load(their["torchscript"]).eval())
        pkg = torch._inductor.aoti_load_package(their["aoti"])
        order = pkg.get_metadata()["nequip_aoti_inputs"].split()
        pkg_args = [inputs[k] for k in order]

        def their_torchscript():
            with torch.jit.optimized_execution(True):
                return ts(dict(inputs))["forces"]

        def their_aoti():
            return pkg(pkg_args)

        def ours_bare():
            with torch.jit.optimized_execution(False):  # as the pair style runs it
                return loaded.module(g.pos, g.atom_type, g.edge_index, g.edge_shift, n, False)

        # same network family, same graph: their energies are not ours (other weights), but both must be finite
        assert torch.isfinite(their_torchscript()).all() and torch.isfinite(ours_bare()[1]).all()
        for _ in range(3):  # the profiling executor specialises over the first calls
            their_torchscript()
        best = {k: float("inf") for k in ("their_torchscript", "their_aoti", "ours_bare", "ours_lammps")}
        lammps_runs = []
        for repeat in range(args.repeats):
            for name, call in (("their_torchscript", their_torchscript), ("their_aoti", their_aoti),
                               ("ours_bare", ours_bare)):
                best[name] = min(best[name], time_calls(call, args.calls) / n * 1e6)
            r = run_lammps_case(ours, cells, 1, args.steps, warmup=2, workdir=work / f"lmp_{layers}_{repeat}",
                                tcmalloc=False, mode="exchange")
            lammps_runs.append(r)
            best["ours_lammps"] = min(best["ours_lammps"], r["us_per_atom_step"])
            print(f"{label}, {n} atoms, round {repeat + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
                  + " µs/atom (best so far)", flush=True)
        their_bound = min(best["their_torchscript"], best["their_aoti"])
        lmp = min(lammps_runs, key=lambda r: r["us_per_atom_step"])
        rows.append({"model": label, "layers": layers, "l_max": l_max, "features": features, "atoms": n,
                     "edges": g.num_edges, "their_parameters": their["parameters"], "our_parameters": ours_params,
                     "their_torchscript_us_per_atom": best["their_torchscript"],
                     "their_aoti_us_per_atom": best["their_aoti"], "their_bound_us_per_atom": their_bound,
                     "our_bare_us_per_atom": best["ours_bare"], "our_lammps_us_per_atom_step": best["ours_lammps"],
                     "ratio_their_bound_over_our_lammps": their_bound / best["ours_lammps"],
                     "ratio_their_bound_over_our_bare": their_bound / best["ours_bare"],
                     "our_lammps_over_our_bare": best["ours_lammps"] / best["ours_bare"],
                     "lammps_cpu_share": lmp.get("cpu_share"), "lammps_stats": lmp.get("evaluated")})
    result = {"host": platform.node(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
              "threads": 1, "kernels": args.kernels, "repeats": args.repeats, "calls_per_round": args.calls, "lammps_steps": args.steps,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "command": "python scripts/bench_nequip_interop.py --issue11 " + " ".join(
                  f"--{k} {getattr(args, k)}" for k in ("repeats", "calls", "steps", "kernels")),
              "rows": rows}
    out = args.out if args.out != DEFAULT_OUT else ROOT / "docs" / "benchmarks" / "nequip_pair_proxy"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(proxy_markdown(result))
    print(proxy_markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def proxy_markdown(result: dict) -> str:
    """The ``--issue11`` results as a Markdown page."""
    la = ", ".join(f"{x:.1f}" for x in result["load_average_before"])
    lb = ", ".join(f"{x:.1f}" for x in result["load_average_after"])
    lines = [f"# mdpot's NequIP against the nequip package's one-rank pair style, by proxy ({result['date']})", "",
             f"`{result['command']}` (torch {result['torch']}, 1 torch thread, float32, FCC Cu, r_max 5 Å, fresh "
             f"weights; mdpot's file with the {result.get('kernels', 'reference')} kernels). Best of {result['repeats']} interleaved rounds (each: their TorchScript, their AOTInductor "
             f"package and our bare model, best of {result['calls_per_round']} calls each; then `pair_style mdpot` in "
             f"LAMMPS on 1 rank, `message_passing exchange`, {result['lammps_steps']} steps after 2). Load "
             f"average {la} before, {lb} after, on 2 cores (above 1: other jobs shared them).", "",
             "**What the proxy bounds.** On one rank the nequip package's `pair_style nequip` maps ghosts to their "
             "local atoms and evaluates its model once on the periodic graph; its µs/atom/step is that model call "
             "(with the autograd forces inside it) plus its own packing, neighbour list and LAMMPS's integration, all "
             "of which add time. So the faster of its two compiled forms on the same periodic graph, in the same "
             "process and thread count, is a **lower bound** of its µs/atom/step, and \"bound / mdpot LAMMPS\" is a "
             "lower bound of how far mdpot's full LAMMPS step is ahead. It does not bound anything on more than one "
             "rank (their pair style runs on one only), does not run their C++ (a build of LAMMPS from source, "
             "impossible here), and compares fresh weights of two implementations with the same hyperparameters, "
             "not the same network.", "",
             "| model | atoms | edges | parameters nequip / mdpot | nequip TorchScript µs/atom | nequip AOTI µs/atom | "
             "nequip bound µs/atom | mdpot bare µs/atom | mdpot LAMMPS µs/atom/step | bound / mdpot LAMMPS | "
             "bound / mdpot bare | mdpot LAMMPS / bare | LAMMPS CPU use |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cpu = f"{r['lammps_cpu_share'] * 100:.0f} %" if r.get("lammps_cpu_share") else "–"
        lines.append(f"| {r['model']} | {r['atoms']} | {r['edges']} | {r['their_parameters']} / {r['our_parameters']} | "
                     f"{r['their_torchscript_us_per_atom']:.1f} | {r['their_aoti_us_per_atom']:.1f} | "
                     f"{r['their_bound_us_per_atom']:.1f} | {r['our_bare_us_per_atom']:.1f} | "
                     f"{r['our_lammps_us_per_atom_step']:.1f} | {r['ratio_their_bound_over_our_lammps']:.2f} | "
                     f"{r['ratio_their_bound_over_our_bare']:.2f} | {r['our_lammps_over_our_bare']:.2f} | "
                     f"{cpu} |")
    lines += ["", "All times are wall times. LAMMPS CPU use is its CPU time over its wall time (below 100 %: the process "
              "waited for a core); the model calls in this process could not be told apart that way."]
    return "\n".join(lines) + "\n"


def markdown(result: dict) -> str:
    """The results as a Markdown page."""
    lines = [f"# nequip models through nequip's calculator and through mdpot ({result['date']})", "",
             f"Fresh-weight nequip models of benchmark width, float32, FCC Cu, {result['threads']} torch threads, energy + "
             "forces with neighbour lists, best of the interleaved calls (`scripts/bench_nequip_interop.py`).", "",
             "| model | atoms | NequIPCalculator µs/atom | MDPotCalculator µs/atom | nequip / mdpot |", "|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['atoms']} | {r['nequip_us_per_atom']:.1f} | {r['mdpot_us_per_atom']:.1f} | "
              f"{r['ratio_nequip_over_mdpot']:.2f} |" for r in result["ase"]]
    if result["lammps"]:
        lines += ["", "LAMMPS, `pair_style mdpot`, 1 torch thread per rank (`scripts/bench_lammps.py --sizes 4000`):", "",
                  "| model | atoms | ranks | µs/atom/step |", "|---|---|---|---|"]
        for label, res in result["lammps"].items():
            lines += [f"| {label} | {r['atoms']} | {r['ranks']} | {r['us_per_atom_step']:.1f} |" for r in res["lammps"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    ap.add_argument("--repeats", type=int, default=4, help="timed calls per calculator and size (best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", nargs="+", default=["allegro", "nequip"], choices=["allegro", "nequip"])
    ap.add_argument("--lammps", action="store_true", help="also LAMMPS: wrapped vs mdpot's own Allegro")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--issue11", action="store_true",
                    help="issue 11's comparison with the nequip package's one-rank pair style, by proxy (docstring)")
    ap.add_argument("--calls", type=int, default=3, help="--issue11: timed model calls per round (best is kept)")
    ap.add_argument("--steps", type=int, default=5, help="--issue11: timed LAMMPS steps per round")
    ap.add_argument("--kernels", choices=["fused", "reference"], default="fused",
                    help="--issue11: mdpot's file calls the fused kernels (the deploy default) or is pure torch")
    ap.add_argument("--build-their", nargs=5, metavar=("STEM", "LAYERS", "LMAX", "FEATURES", "RMAX"),
                    help=argparse.SUPPRESS)  # --issue11's subprocess
    args = ap.parse_args(argv)
    if args.build_their:
        stem, layers, l_max, features, r_max = args.build_their
        print(json.dumps(build_their_nequip(stem, int(layers), int(l_max), int(features), float(r_max))))
        return 0
    if args.issue11:
        if args.repeats == ap.get_default("repeats"):
            args.repeats = 2
        return issue11(args)

    import numpy as np
    import torch
    from ase.calculators.calculator import all_changes

    from mdpot import MDPotCalculator
    from mdpot.interop.nequip import deploy_nequip
    from mdpot.testing import fcc
    from mdpot.testing.nequip import build_nequip_file

    work = ROOT / "runs" / "bench_nequip"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    rows, files = [], {}
    for arch in args.arch:
        source = build_nequip_file(work / f"{arch}.nequip.pth", arch, "float32", size="benchmark", r_max=5.0)
        wrapped = deploy_nequip(source, work / f"{arch}_wrapped.pt", overwrite=True).path
        files[arch] = (source, wrapped)
        from nequip.integrations.ase import NequIPCalculator

        calcs = {"nequip": NequIPCalculator.from_compiled_model(str(source), device="cpu",
                                                                 chemical_species_to_atom_type_map=True),
                 "mdpot": MDPotCalculator(wrapped)}
        for n in args.sizes:
            atoms = fcc("Cu", SIZES[n], rattle=0.05, seed=1)
            best = {k: float("inf") for k in calcs}
            energies = {}
            for k in range(args.repeats + 1):  # the first round warms up
                for name, calc in calcs.items():
                    atoms.positions += np.random.default_rng(k).normal(0, 1e-4, atoms.positions.shape)
                    t0 = time.perf_counter()
                    calc.calculate(atoms, ["energy", "forces"], all_changes)
                    dt = time.perf_counter() - t0
                    energies[name] = calc.results["energy"]
                    if k:
                        best[name] = min(best[name], dt)
            row = {"arch": arch, "atoms": len(atoms), "nequip_us_per_atom": 1e6 * best["nequip"] / len(atoms),
                   "mdpot_us_per_atom": 1e6 * best["mdpot"] / len(atoms)}
            row["ratio_nequip_over_mdpot"] = row["nequip_us_per_atom"] / row["mdpot_us_per_atom"]
            rows.append(row)
            print(f"{arch:8s} {len(atoms):6d} atoms: NequIPCalculator {row['nequip_us_per_atom']:7.1f} µs/atom, "
                  f"MDPotCalculator {row['mdpot_us_per_atom']:7.1f} µs/atom (× {row['ratio_nequip_over_mdpot']:.2f})",
                  flush=True)

    lammps = {}
    if args.lammps and "allegro" in files:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for label, extra in (("wrapped nequip Allegro", ["--model", str(files["allegro"][1])]),
                             ("mdpot Allegro", [])):
            out = work / ("lmp_wrapped" if extra else "lmp_mdpot")
            cmd = [sys.executable, str(ROOT / "scripts" / "bench_lammps.py"), "--sizes", "4000", "--ranks", "1", "2",
                   "--steps", "5", "--out", str(out)] + extra
            print("$ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env)
            lammps[label] = json.loads((out / "bench_lammps.json").read_text())

    result = {"host": platform.node(), "threads": args.threads, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "ase": rows, "lammps": lammps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
