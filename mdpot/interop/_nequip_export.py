"""Subprocess helper: a nequip checkpoint or package -> a nequip TorchScript file (``*.nequip.pth``).

Run as ``python -m mdpot.interop._nequip_export SOURCE OUT.nequip.pth [REFERENCE.json]``; with REFERENCE it
also writes the eager (source) model's results through nequip's dict interface on the deploy self-check
structures, so that the parent can compare the wrapped model with the model as nequip built it. It needs the ``nequip`` package
(and ``nequip-allegro`` for Allegro models). It runs in its own process because nequip's global state
(default dtype float64, global seeds, JIT fusion strategy, e3nn and dynamo flags, environment variables)
is process-wide and would leak into the caller. Prints one JSON line with the model's metadata.
"""
from __future__ import annotations

import json
import sys


def export(source: str, out: str, reference: str = "") -> dict:
    import torch
    from nequip.model.inference_models.torchscript import save_torchscript_model
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.model.utils import _EAGER_MODEL_KEY
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.train.lightning import _SOLE_MODEL_KEY
    from nequip.utils.global_state import get_latest_global_state, set_global_state

    if not out.endswith(".nequip.pth"):
        raise ValueError(f"output name must end in .nequip.pth, got {out!r}")
    # The same steps as nequip's TorchScript compile branch, without its torch-version guard.
    set_workflow_state("compile")
    set_global_state(allow_tf32=False)
    model = load_saved_model(source, _EAGER_MODEL_KEY, _SOLE_MODEL_KEY)
    metadata = dict(model.metadata)
    for key, value in get_latest_global_state(only_metadata_related=True).items():
        metadata[key] = ("1" if value else "0") if isinstance(value, bool) else value
    save_torchscript_model(model, metadata, out, torch.device("cpu"))
    if reference:
        from .nequip import self_check_structures, nequip_dict_eval

        model.eval()
        elements, r_max = str(metadata["type_names"]).split(), float(metadata["r_max"])
        results = {label: {k: (v.tolist() if hasattr(v, "tolist") else v)
                           for k, v in nequip_dict_eval(model, atoms, r_max, elements).items()}
                   for label, atoms in self_check_structures(elements, r_max).items()}
        with open(reference, "w") as fh:
            json.dump(results, fh)
    return {k: str(v) for k, v in metadata.items()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: python -m mdpot.interop._nequip_export SOURCE OUT.nequip.pth [REFERENCE.json]", file=sys.stderr)
        return 2
    try:
        meta = export(*argv)
    except Exception as exc:  # reported to the parent process as one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"nequip export failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    print(json.dumps(meta, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
