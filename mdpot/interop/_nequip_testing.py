"""Test helpers: small nequip models with fresh weights, exported by nequip's own TorchScript code.

``build_nequip_file(path, architecture, dtype)`` runs in a subprocess (``python -m
mdpot.interop._nequip_testing OUT ARCH DTYPE``) because nequip's global state (default dtype float64, seeds,
JIT and e3nn flags) is process-wide. Needs ``nequip`` (and ``nequip-allegro`` for Allegro) importable.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ELEMENTS = ("Cu", "Au")
R_MAX = 4.0


def _build(out: str, architecture: str, dtype: str, r_max: float = R_MAX, num_layers: int = 2, seed: int = 1) -> dict:
    import torch
    from nequip.model.inference_models.torchscript import save_torchscript_model
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.utils.global_state import get_latest_global_state, set_global_state

    set_workflow_state("compile")
    set_global_state(allow_tf32=False)
    common = dict(seed=seed, model_dtype=dtype, type_names=list(ELEMENTS), r_max=r_max, avg_num_neighbors=12.0,
                  per_type_energy_scales={"Cu": 1.3, "Au": 0.7}, per_type_energy_shifts={"Cu": -3.5, "Au": -2.25})
    if architecture == "nequip":
        from nequip.model import NequIPGNNModel

        model = NequIPGNNModel(num_layers=num_layers, l_max=1, num_features=4, radial_mlp_width=8, **common)
    elif architecture == "allegro":
        from allegro.model import AllegroModel

        model = AllegroModel(l_max=1, num_layers=num_layers, num_scalar_features=8, num_tensor_features=2,
                             radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 4},
                             scalar_embed_mlp_hidden_layers_width=8, allegro_mlp_hidden_layers_width=8,
                             readout_mlp_hidden_layers_width=8, **common)
    else:
        raise ValueError(f"architecture must be nequip or allegro, got {architecture!r}")
    # Give the untrained weights some size so forces are not tiny (nequip initialises some layers to zero).
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    metadata = dict(model.metadata)
    for key, value in get_latest_global_state(only_metadata_related=True).items():
        metadata[key] = ("1" if value else "0") if isinstance(value, bool) else value
    save_torchscript_model(model, metadata, out, torch.device("cpu"))
    return {k: str(v) for k, v in metadata.items()}


def build_nequip_file(path, architecture: str, dtype: str, num_layers: int = 2, seed: int = 1) -> Path:
    """Write a small fresh-weight nequip model (Cu, Au; r_max 4 Å) as ``path`` (must end in ``.nequip.pth``)."""
    path = Path(path)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "mdpot.interop._nequip_testing", str(path), architecture, dtype,
                           str(num_layers), str(seed)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"building the nequip test model failed: {proc.stderr.strip()[-2000:]}")
    return path


if __name__ == "__main__":
    out, arch, dt, layers, seed = sys.argv[1:6]
    print(json.dumps(_build(out, arch, dt, num_layers=int(layers), seed=int(seed))))
