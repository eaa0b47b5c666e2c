"""The ``mdpot`` command line: data, train, validate, init, deploy, info, check, doctor, demo.

Every subcommand is reachable in-process through :func:`main` (``main(["info", "cu.pt"])``). Errors print one
line ``mdpot: error: ...`` and return exit code 1 (usage errors 2); ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def _read_config(path: Optional[str]) -> Dict[str, Any]:
    if path is None:
        from .models import DEFAULT_MODEL

        return DEFAULT_MODEL
    from ._yaml import read_yaml_mapping

    expected = "'architecture' and 'model' sections"
    data = read_yaml_mapping(path, expected)
    if "model" not in data:
        raise CLIError(f"{path}: expected a mapping with {expected}")
    return data


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CLIError(f"{path} exists; pass --force to overwrite it")


def cmd_init(args: argparse.Namespace) -> int:
    from .models import create_checkpoint, make_config

    data = _read_config(args.config)
    config = make_config(data.get("architecture", "allegro"), data["model"])
    out = Path(args.output)
    _check_output(out, args.force)
    create_checkpoint(config, out, seed=args.seed)
    print(f"wrote {out} ({config.architecture}, elements {' '.join(config.elements)}, fresh weights, seed {args.seed})")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy_checkpoint
    from .interop.nequip import MDPOT, MDPOT_CHECKPOINT, deploy_nequip, detect_source_kind

    source, out = Path(args.source), Path(args.output)
    _check_output(out, args.force)
    kind = detect_source_kind(source, assume=args.source_family)
    if kind == MDPOT:
        raise ValueError(f"{source}: is already a deployed mdpot model (see `mdpot info {source}`); deploy the "
                         f"checkpoint it came from to change its dtype")
    t0 = time.perf_counter()
    if kind == MDPOT_CHECKPOINT:
        deployed = deploy_checkpoint(source, out, dtype=args.dtype or "float64", overwrite=True)
    else:
        deployed = deploy_nequip(source, out, dtype=args.dtype, overwrite=True, kind=kind)
    meta = deployed.metadata
    print(f"wrote {out}: {meta['architecture']} {meta['model_dtype']} from {_origin(meta)}, "
          f"{deployed.num_parameters} parameters, self-check passed ({time.perf_counter() - t0:.1f} s)")
    return 0


def _origin(meta: dict) -> str:
    """Where a deployed model's weights came from, in one phrase (provenance ``source`` or ``checkpoint``)."""
    prov = meta.get("provenance") or {}
    src = prov.get("source")
    if isinstance(src, dict):
        return f"{src.get('kind', 'unknown source')} {src.get('file', '?')} (sha256 {str(src.get('sha256', ''))[:16]}…)"
    if prov.get("checkpoint"):
        return f"mdpot checkpoint {prov['checkpoint']}"
    return "an in-memory mdpot model"


def cmd_info(args: argparse.Namespace) -> int:
    from .deploy import load_model

    model = load_model(args.model)
    meta = dict(model.metadata)
    meta["elements"] = list(meta["elements"])
    meta["num_parameters"] = model.num_parameters
    meta["origin"] = _origin(model.metadata)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    width = max(len(k) for k in meta)
    for key in sorted(meta):
        value = meta[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True, ensure_ascii=False)
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .deploy import load_model
    from .deploy.checks import run_checks

    model = load_model(args.model)
    results = run_checks(model, checkpoint=args.checkpoint)
    failed = [r for r in results if not r.passed]
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<28} {r.detail}")
    if failed:
        raise CLIError(f"{len(failed)} of {len(results)} checks failed: {', '.join(r.name for r in failed)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .lammps.plugin import plugin_info

    info = plugin_info()
    print(json.dumps(info, indent=2, sort_keys=True, default=str))
    return 0 if info.get("exists") else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(workdir=Path(args.workdir), steps=args.steps, repeat=args.repeat, dtype=args.dtype,
             lammps_steps=args.lammps_steps, lammps_size=args.lammps_size, ranks=args.ranks)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdpot", description="Equivariant ML interatomic potentials: train, deploy, inspect, run.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="write a checkpoint with fresh weights from a model config (YAML)")
    p.add_argument("config", nargs="?", help="YAML with 'architecture' and 'model' sections (default: the demo Allegro)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("deploy", help="compile a checkpoint (mdpot or nequip) to a self-checked TorchScript model",
                       description="Compile a model to a self-checked mdpot TorchScript file. SOURCE is an mdpot checkpoint, "
                                   "or a model of the nequip package: a compiled TorchScript file (.nequip.pth, no nequip "
                                   "install needed), a training checkpoint or a packaged model (.nequip.zip; these need "
                                   "nequip and, for Allegro, nequip-allegro installed). The kind is read from the content.")
    p.add_argument("source", help="mdpot checkpoint, nequip .nequip.pth, nequip checkpoint or .nequip.zip")
    p.add_argument("-o", "--output", required=True, help="deployed model file to write")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="model precision (mdpot checkpoints: default float64; nequip models keep their own dtype)")
    p.add_argument("--from", dest="source_family", choices=("mdpot", "nequip"), default=None,
                   help="take SOURCE as this family's file instead of detecting it (nequip: any TorchScript, torch.save "
                        "or torch.package archive is read as nequip's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("info", help="print a deployed model's metadata and parameter count")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="integrity and physics self-checks of a deployed model")
    p.add_argument("model")
    p.add_argument("--checkpoint", help="also compare against the eager model of this checkpoint")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("doctor", help="report the LAMMPS plugin's path, build versions and status")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("demo", help="deploy the example model and run short MD in ASE and LAMMPS (the README's main job)")
    p.add_argument("--workdir", default="runs/demo", help="where models and logs go (default runs/demo)")
    p.add_argument("--steps", type=int, default=50, help="MD steps (default 50)")
    p.add_argument("--repeat", type=int, default=4, help="FCC Cu supercell n x n x n cubic cells (default 4: 256 atoms)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--lammps-steps", type=int, default=200, help="LAMMPS NVE steps (0 skips LAMMPS; default 200)")
    p.add_argument("--lammps-size", type=int, default=6, help="LAMMPS box of n x n x n FCC cells (default 6: 864 atoms)")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks for LAMMPS (default 2)")
    p.set_defaults(func=cmd_demo)

    from .data import cli as data_cli
    from .train import cli as train_cli
    from .validate import cli as validate_cli

    for module in (data_cli, train_cli, validate_cli):
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mdpot: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure becomes one line unless --debug
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mdpot: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
