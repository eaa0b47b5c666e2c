"""Rewrite the training provenance of checkpoints written by mdpot 0.1 so that it holds no absolute path.

mdpot 0.1 recorded ``run_dir``, ``train_data`` and ``validation_data`` in ``extra["provenance"]`` as absolute
paths of the machine that trained. This rewrites each one as mdpot now records it (``mdpot._files.portable_path``:
relative to ``--base``, the working directory the training ran in, when inside it; else the name alone). Nothing
else in the file changes: the weights are checked to be bit-identical after the rewrite, and the file is replaced
atomically. Used once on ``examples/models/*/model.ckpt``, with ``--base`` the root of the checkout they were
trained in (so ``runs/allegro-cu-emt``, ``runs/data/cu-emt_train.xyz``)::

    python scripts/portable_provenance.py --base CHECKOUT examples/models/*/model.ckpt

after which the shipped ``model.pt`` files were deployed again from them (``mdpot deploy ... --force``).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import torch

from mdpot._files import atomic_write_bytes, portable_path

PATH_KEYS = ("run_dir", "train_data", "validation_data")


def rewrite(path: Path, base: Path) -> dict:
    """Rewrite ``path`` in place; returns the changed fields ``{key: (old, new)}``."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    provenance = payload.get("extra", {}).get("provenance", {})
    changed = {}
    for key in PATH_KEYS:
        value = provenance.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            provenance[key] = portable_path(value, base)
            changed[key] = (value, provenance[key])
    if not changed:
        return changed
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    again = torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    before, after = payload["state_dict"], again["state_dict"]
    if before.keys() != after.keys() or not all(
            before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]) for k in before):
        raise RuntimeError(f"{path}: the weights would change; nothing written")
    atomic_write_bytes(path, buffer.getvalue())
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--base", type=Path, default=Path.cwd(),
                        help="the working directory the runs were trained from (default: the current one)")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        changed = rewrite(path, args.base)
        for key, (old, new) in changed.items():
            print(f"{path}: {key}: {old} -> {new}")
        if not changed:
            print(f"{path}: no absolute path in its provenance; left as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
