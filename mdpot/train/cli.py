"""``mdpot train``: the subparser the main CLI (``mdpot.cli``) adds to its own.

``add_parser(subparsers)`` registers the subcommand; its ``func(args) -> int`` raises an exception with a
one-line message on failure (the main CLI prints ``mdpot: error: <message>`` and exits 1).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_train_config
    from .trainer import Trainer

    config = load_train_config(args.config)
    run_dir = Path(args.output) if args.output else Path("runs") / Path(args.config).stem
    if args.committee is not None:
        import shlex

        from .trainer import train_committee

        results = train_committee(config, run_dir, args.committee, bootstrap=args.bootstrap, resume=args.resume,
                                  force=args.force, progress=not args.no_progress)
        checkpoints = " ".join(shlex.quote(str(r.best_checkpoint)) for r in results)
        print(f"trained a committee of {len(results)} in {run_dir}; deploy it with:\n"
              f"  mdpot deploy {checkpoints} -o {shlex.quote(str(run_dir / 'committee.pt'))}")
        return 0
    if args.bootstrap:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, bootstrap=True))
    Trainer(config, run_dir, resume=args.resume, force=args.force, progress=not args.no_progress).run()
    return 0


def _committee_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected a committee of at least 2 members, got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train``: ``mdpot train config.yaml [-o RUN_DIR] [--committee N [--bootstrap]] [--resume | --force]
    [--no-progress]``."""
    p = subparsers.add_parser("train", help="train a model from a YAML config on extxyz data",
                              description="Train a model. Writes RUN_DIR/{config.yaml, metrics.csv, learning_curve.png, "
                                          "best.ckpt, last.ckpt}; deploy best.ckpt with `mdpot deploy`.")
    p.add_argument("config", help="training config (YAML: architecture, model, data, training)")
    p.add_argument("-o", "--output", metavar="RUN_DIR", help="run folder (default runs/<config name>)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last.ckpt")
    group.add_argument("--force", action="store_true", help="start afresh even if RUN_DIR holds a run (deletes its files)")
    p.add_argument("--committee", type=_committee_size, metavar="N",
                   help="train N committee members into RUN_DIR/member_0 .. member_{N-1}, with seeds seed, seed+1, ... "
                        "(other initial weights and batch orders; another validation split when the data has no "
                        "validation file), then print the `mdpot deploy` command of the committee file")
    p.add_argument("--bootstrap", action="store_true",
                   help="train on a bootstrap resample of the training structures (training.bootstrap; with "
                        "--committee each member draws its own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (epoch summaries are still printed)")
    p.set_defaults(func=cmd_train)
    return p
