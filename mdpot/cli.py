"""The ``mdpot`` command line: data, train, validate, init, deploy, info, check, doctor, demo, properties, select,
label.

Every subcommand is reachable in-process through :func:`main` (``main(["info", "cu.pt"])``). Errors print one
line ``mdpot: error: ...`` and return exit code 1 (usage errors 2); ``--debug`` (before or after the subcommand)
shows the traceback instead. Output into a pipe that closes early (``mdpot info cu.pt | head -1``) ends quietly
with exit code 0. ``mdpot --version`` prints one line: mdpot's version and torch's, e3nn's, ase's and Python's.
"""
from __future__ import annotations

import argparse
import json
import os
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
    """Refuse an output that would overwrite without --force, is a folder, or lies below a file."""
    if path.is_dir():
        raise CLIError(f"{path}: is a folder; -o names the file to write")
    if path.exists() and not force:
        raise CLIError(f"{path} exists; pass --force to overwrite it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"cannot write {path}: {parent} is a file, not a folder")
            break


def _write_error(exc: Exception, path: Path) -> Exception:
    """A failure to create ``path`` (or its folder) in one line; other exceptions are returned as they are.

    torch's C++ writer reports an unwritable file as ``[enforce fail at ...] open file failed ...``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        target = Path(exc.filename)
        if target == path or target.parent == path.parent or target in path.parents:
            return CLIError(f"cannot write {path}: {exc.strerror}")
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("open file failed" in text or "Parent directory" in text):
        reason = text.split("strerror:", 1)[1].strip().splitlines()[0] if "strerror:" in text else "cannot open it"
        return CLIError(f"cannot write {path}: {reason}")
    return exc


def cmd_init(args: argparse.Namespace) -> int:
    from .models import create_checkpoint, make_config

    data = _read_config(args.config)
    try:
        config = make_config(data.get("architecture", "allegro"), data["model"])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{args.config}: model: {exc}" if args.config else str(exc)) from None
    out = Path(args.output)
    _check_output(out, args.force)
    try:
        create_checkpoint(config, out, seed=args.seed)
    except (OSError, RuntimeError) as exc:
        raise _write_error(exc, out) from None
    print(f"wrote {out} ({config.architecture}, elements {' '.join(config.elements)}, fresh weights, seed {args.seed})")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy_checkpoint
    from .interop.nequip import MDPOT, MDPOT_CHECKPOINT, deploy_nequip, detect_source_kind

    if len(args.source) > 1:
        return _deploy_committee(args)
    source, out = Path(args.source[0]), Path(args.output)
    fmt = _deploy_format(out, args.format)
    if args.cpu_isa != "native" and fmt != "aoti":
        raise CLIError(f"--cpu-isa {args.cpu_isa} applies to AOTInductor packages only; add --format aoti")
    if args.aoti_threads != "dynamic" and fmt != "aoti":
        raise CLIError(f"--aoti-threads {args.aoti_threads} applies to AOTInductor packages only; add --format aoti")
    from .contract import default_kernels

    kernels = args.kernels or default_kernels(fmt)
    _check_output(out, args.force)
    kind = detect_source_kind(source, assume=args.source_family)
    if args.kernels == "fused" and kind != MDPOT_CHECKPOINT:
        raise CLIError(f"{source}: --kernels fused deploys mdpot checkpoints only (a nequip model keeps its own code)")
    if kernels == "fused" and kind == MDPOT_CHECKPOINT:
        from .ops import OpsUnavailableError, load_ops

        try:
            load_ops()
        except OpsUnavailableError as exc:  # its line names the remedy, --kernels reference
            raise CLIError(str(exc)) from None
    if kind == MDPOT:
        raise ValueError(f"{source}: is already a deployed mdpot model (see `mdpot info {source}`); deploy the "
                         f"checkpoint it came from to change its dtype or format")
    if kind != MDPOT_CHECKPOINT and fmt == "aoti":
        raise CLIError(f"{source}: --format aoti deploys mdpot checkpoints only; deploy this nequip model with "
                       f"--format torchscript (-o {out.with_suffix('.pt').name})")
    t0 = time.perf_counter()
    try:
        if kind == MDPOT_CHECKPOINT:
            deployed = deploy_checkpoint(source, out, dtype=args.dtype or "float64", overwrite=True, format=fmt,
                                         cpu_isa=args.cpu_isa, aoti_threads=args.aoti_threads,
                                         kernels=kernels)
        else:
            deployed = deploy_nequip(source, out, dtype=args.dtype, overwrite=True, kind=kind)
    except (OSError, RuntimeError) as exc:
        raise _write_error(exc, out) from None
    meta = deployed.metadata
    count = deployed.num_parameters
    what = "TorchScript" if fmt == "torchscript" else (f"AOTInductor package for {deployed.target['isa']}, "
                                                      f"{deployed.target.get('threads', 'dynamic')} threads")
    if meta.get("kernels") == "fused":
        what += ", fused kernels"
    print(f"wrote {out}: {meta['architecture']} {meta['model_dtype']} {what} from {_origin(meta)}, "
          f"{'an unknown number of' if count is None else count} parameters, self-check passed "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _deploy_committee(args: argparse.Namespace) -> int:
    """``mdpot deploy A.ckpt B.ckpt ... -o committee.pt``: one committee file (format version 7) of mdpot
    checkpoints."""
    from .deploy import deploy_committee
    from .interop.nequip import KIND_LABELS, MDPOT_CHECKPOINT, detect_source_kind

    out = Path(args.output)
    if _deploy_format(out, args.format) != "torchscript":
        raise CLIError("a committee (several checkpoints) deploys to TorchScript only; drop --format aoti or the "
                       ".pt2 name")
    for flag, value, default in (("--cpu-isa", args.cpu_isa, "native"), ("--aoti-threads", args.aoti_threads, "dynamic"),
                                 ("--from", args.source_family, None)):
        if value != default:
            raise CLIError(f"{flag} {value} does not apply to a committee of mdpot checkpoints")
    _check_output(out, args.force)
    for source in args.source:
        kind = detect_source_kind(Path(source))
        if kind != MDPOT_CHECKPOINT:
            raise CLIError(f"{source}: a committee is deployed from mdpot training checkpoints only, not a "
                           f"{KIND_LABELS.get(kind, kind)}")
    kernels = args.kernels or "fused"
    if kernels == "fused":
        from .ops import OpsUnavailableError, load_ops

        try:
            load_ops()
        except OpsUnavailableError as exc:
            raise CLIError(str(exc)) from None
    t0 = time.perf_counter()
    try:
        deployed = deploy_committee([Path(c) for c in args.source], out, dtype=args.dtype or "float64",
                                    overwrite=True, kernels=kernels)
    except (OSError, RuntimeError) as exc:
        raise _write_error(exc, out) from None
    meta = deployed.metadata
    print(f"wrote {out}: committee of {deployed.committee_size} {meta['architecture']} {meta['model_dtype']} models "
          f"(TorchScript{', fused kernels' if kernels == 'fused' else ''}, format version {meta['mdpot_format_version']}), "
          f"{deployed.num_parameters} parameters, self-check passed ({time.perf_counter() - t0:.1f} s)")
    return 0


def _deploy_format(out: Path, asked: Optional[str]) -> str:
    """The format to deploy to ``out``: ``asked`` (--format), else ``aoti`` for a ``.pt2`` name, else the default;
    an ``-o`` suffix of the other format is refused."""
    from .contract import DEFAULT_FORMAT, FORMAT_SUFFIXES as FORMAT_SUFFIX

    by_suffix = {suffix: fmt for fmt, suffix in FORMAT_SUFFIX.items()}.get(out.suffix)
    if asked is None:
        return by_suffix or DEFAULT_FORMAT
    if by_suffix not in (None, asked):
        raise CLIError(f"-o {out}: the suffix {out.suffix} is for --format {by_suffix}, not --format {asked}; "
                       f"use -o {out.with_suffix(FORMAT_SUFFIX[asked])}")
    return asked


def _origin(meta: dict) -> str:
    """Where a deployed model's weights came from, in one phrase (provenance ``source`` or ``checkpoint``)."""
    prov = meta.get("provenance") or {}
    members = meta.get("committee_members")
    if members:
        return (f"a committee of {len(members)} models: "
                + ", ".join(m.get("checkpoint") or "an in-memory model" for m in members))
    src = prov.get("source")
    if isinstance(src, dict):
        return f"{src.get('kind', 'unknown source')} {src.get('file', '?')} (sha256 {str(src.get('sha256', ''))[:16]}…)"
    if prov.get("checkpoint"):
        return f"mdpot checkpoint {prov['checkpoint']}"
    return "an in-memory mdpot model"


def _repulsion(meta: dict) -> Optional[str]:
    """The model's short-range repulsion in one phrase with its switching radii per pair of elements (the config
    leaves the default radii implicit), or ``None`` without one."""
    config = meta.get("config")
    if not isinstance(config, dict) or not config.get("repulsion"):
        return None
    from .models import make_config

    try:
        cfg = make_config(meta["architecture"], config)
    except (TypeError, ValueError):  # a config this mdpot cannot read: say what it names
        return str(config["repulsion"])
    inner, outer = cfg.repulsion_radii()
    els = cfg.elements
    pairs = ", ".join(f"{a}-{els[j]} {inner[i][j]:.4g}/{outer[i][j]:.4g}" for i, a in enumerate(els)
                      for j in range(i, len(els)))
    return f"{cfg.repulsion} (r_inner/r_outer, Å: {pairs})"


def cmd_info(args: argparse.Namespace) -> int:
    from .deploy import load_model

    model = load_model(args.model)
    meta = dict(model.metadata)
    meta["elements"] = list(meta["elements"])
    meta["num_parameters"] = "unknown" if model.num_parameters is None else model.num_parameters
    meta["format"] = model.format
    if model.target is not None:
        meta["target"] = model.target
    repulsion = _repulsion(model.metadata)
    if repulsion is not None:
        meta["repulsion"] = repulsion
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
    if not info.get("exists"):
        raise CLIError(f"the LAMMPS plugin is not built ({info.get('path')} missing); "
                       f"`python -m mdpot.lammps.plugin` builds it")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(workdir=Path(args.workdir), steps=args.steps, repeat=args.repeat, dtype=args.dtype,
             lammps_steps=args.lammps_steps, lammps_size=args.lammps_size, ranks=args.ranks)
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded_int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, 0, "an integer >= 0")


def _bounded_int(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def version_line() -> str:
    """``mdpot X (torch Y, e3nn Z, ase W, Python V)``, from package metadata (nothing heavy is imported)."""
    from importlib import metadata

    from ._version import __version__

    parts = []
    for dist in ("torch", "e3nn", "ase"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    parts.append(f"Python {sys.version.split()[0]}")
    return f"mdpot {__version__} ({', '.join(parts)})"


def build_parser() -> argparse.ArgumentParser:
    from .contract import AOTI_CPU_ISAS as CPU_ISAS, AOTI_THREADS, DEFAULT_FORMAT, KERNELS, default_kernels
    from .contract import DEPLOY_FORMATS as FORMATS

    parser = argparse.ArgumentParser(prog="mdpot", description="Equivariant ML interatomic potentials: train, deploy, inspect, run.")
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print mdpot's version (and torch, e3nn, ase, Python) and exit")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="write a checkpoint with fresh weights from a model config (YAML)",
                       description="Write an mdpot training checkpoint with freshly initialised weights for the model "
                                   "described by CONFIG (YAML with 'architecture' and 'model' sections; without CONFIG, "
                                   "the demo Allegro). Deploy it with `mdpot deploy`, or train from it.")
    p.add_argument("config", nargs="?", help="YAML with 'architecture' and 'model' sections (default: the demo Allegro)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write")
    p.add_argument("--seed", type=non_negative_int, default=0, help="weight initialisation seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("deploy", help="compile a checkpoint (mdpot or nequip) to a self-checked TorchScript model "
                                      "or AOTInductor package",
                       description="Compile a model to a self-checked mdpot TorchScript file, or with --format aoti (or "
                                   "-o NAME.pt2) an AOTInductor package of native code for this machine's CPU (mdpot "
                                   "checkpoints only; it runs on machines with the same CPU features). SOURCE is an mdpot checkpoint, "
                                   "or a model of the nequip package: a compiled TorchScript file (.nequip.pth, no nequip "
                                   "install needed), a training checkpoint or a packaged model (.nequip.zip; these need "
                                   "nequip and, for Allegro, nequip-allegro installed). The kind is read from the content. "
                                   "nequip checkpoints and packages are Python pickles that nequip's own loader unpickles, "
                                   "which can run code stored in the file: deploy only such files from a source you trust "
                                   "(mdpot checkpoints are read as tensors and plain data only). Several mdpot checkpoints "
                                   "(mdpot deploy A.ckpt B.ckpt ... -o committee.pt) make one committee file: the "
                                   "members' mean drives the dynamics and their spread measures the uncertainty "
                                   "(docs/contract.md, format version 7).")
    p.add_argument("source", nargs="+",
                   help="mdpot checkpoint, nequip .nequip.pth, nequip checkpoint or .nequip.zip; several mdpot "
                        "checkpoints write one committee file (format version 7: the mean drives the dynamics, the "
                        "members' spread is reported; TorchScript only)")
    p.add_argument("-o", "--output", required=True, help="deployed model file to write")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="model precision (mdpot checkpoints: default float64; nequip models keep their own dtype)")
    p.add_argument("--from", dest="source_family", choices=("mdpot", "nequip"), default=None,
                   help="take SOURCE as this family's file instead of detecting it (nequip: any TorchScript, torch.save "
                        "or torch.package archive is read as nequip's)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help=f"torchscript (.pt) or aoti: an AOTInductor package (.pt2) of native code for this machine's "
                        f"CPU, mdpot checkpoints only (default: aoti if -o ends in .pt2, else {DEFAULT_FORMAT})")
    p.add_argument("--cpu-isa", choices=tuple(CPU_ISAS), default="native",
                   help="aoti: compile for this instruction set instead of this machine's (native), so that the "
                        "package also runs on older CPUs (default native)")
    p.add_argument("--aoti-threads", choices=AOTI_THREADS, default="dynamic",
                   help="aoti: dynamic compiles parallel loops that follow the running thread count (torch threads, "
                        "OMP_NUM_THREADS, the pair style's threads) and atomic scatters; serial compiles none and plain "
                        "scatters, fastest with one thread per MPI rank (default dynamic)")
    p.add_argument("--kernels", choices=KERNELS, default=None,
                   help="mdpot checkpoints: fused calls mdpot's C++ tensor-product kernels (faster in TorchScript, "
                        "not in packages; the file needs libmdpot_ops.so, built with the LAMMPS plugin, and is format "
                        "version 8, or 6 for a package); "
                        "reference is pure torch, readable by older mdpot (default: "
                        f"{default_kernels('torchscript')} for TorchScript, {default_kernels('aoti')} for AOTInductor "
                        "packages)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("info", help="print a deployed model's metadata and parameter count",
                       description="Print the metadata a deployed model carries (architecture, elements, r_max, dtype, "
                                   "versions, provenance, weights digest), its parameter count and, if it has one, its "
                                   "short-range repulsion with the switching radii per pair of elements. The file's metadata "
                                   "and weights digest are checked on loading.")
    p.add_argument("model", help="deployed model file (written by `mdpot deploy`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="integrity and physics self-checks of a deployed model",
                       description="Check a deployed model: weights digest, forces against finite differences of the "
                                   "energy, equivariance (rotation, reflection, translation, permutation) and momentum "
                                   "conservation on a small periodic structure; with --checkpoint, also agreement with "
                                   "the checkpoint it was deployed from. Exit code 1 if any check fails.")
    p.add_argument("model", help="deployed model file (written by `mdpot deploy`)")
    p.add_argument("--checkpoint", help="also compare against the eager model of this mdpot checkpoint")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("doctor", help="report the LAMMPS plugin's path, build versions and status",
                       description="Print the LAMMPS plugin's build record as JSON: its path, whether it exists and is "
                                   "up to date, and the torch, LAMMPS and MPI versions it was built against. Exit code 1 "
                                   "if the plugin is not built.")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("demo", help="deploy the example model and run short MD in ASE and LAMMPS (the README's main job)",
                       description="Deploy the shipped Allegro Cu model, run NVE molecular dynamics with the ASE "
                                   "calculator and then with LAMMPS (pair_style mdpot) on MPI ranks, and print the "
                                   "energy drift and speed of both.")
    p.add_argument("--workdir", default="runs/demo", help="where models and logs go (default runs/demo)")
    p.add_argument("--steps", type=positive_int, default=50, help="MD steps (default 50)")
    p.add_argument("--repeat", type=positive_int, default=4,
                   help="FCC Cu supercell n x n x n cubic cells (default 4: 256 atoms)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--lammps-steps", type=non_negative_int, default=200,
                   help="LAMMPS NVE steps (0 skips LAMMPS; default 200)")
    p.add_argument("--lammps-size", type=positive_int, default=6,
                   help="LAMMPS box of n x n x n FCC cells (default 6: 864 atoms)")
    p.add_argument("--ranks", type=positive_int, default=2, help="MPI ranks for LAMMPS (default 2)")
    p.set_defaults(func=cmd_demo)

    from .data import cli as data_cli
    from .data import label_cli
    from .train import cli as train_cli
    from .validate import cli as validate_cli

    from .properties import cli as properties_cli

    from . import selection as select_cli

    for module in (data_cli, train_cli, validate_cli, properties_cli, select_cli, label_cli):
        module.add_parser(sub)
    # `mdpot info m.pt --debug` works as well as `mdpot --debug info m.pt`; SUPPRESS keeps the top-level value
    # when the subcommand does not give it.
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    return parser


#: Exceptions whose message is the whole story for a user (besides mdpot's own exception classes, such as
#: SelfCheckError); anything else is named with its type.
_USER_ERRORS = (ValueError, TypeError, OSError)


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    ours = type(exc).__module__.split(".")[0] == "mdpot"
    if first and (ours or (isinstance(exc, _USER_ERRORS) and not isinstance(exc, (KeyError, IndexError)))):
        return first
    name = type(exc).__name__
    return f"{name}: {first} (unexpected; rerun with --debug for the traceback)" if first else \
        f"{name} (unexpected; rerun with --debug for the traceback)"


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush into a closed pipe cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in-process): nothing to redirect
        pass


def main(argv: Optional[List[str]] = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader went away (`mdpot info m.pt | head -1`): that is not an error
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print("mdpot: interrupted", file=sys.stderr)
        return 130
    except SystemExit:  # --help, --version and usage errors: their output may meet a closed pipe too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()
        raise
    except Exception as exc:  # every failure becomes one line unless --debug
        if debug:
            raise
        print(f"mdpot: error: {_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
