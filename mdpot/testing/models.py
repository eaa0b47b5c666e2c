"""Small, fast models of every architecture for test suites (the same physics checks apply to all)."""
from __future__ import annotations

from typing import Any, Dict, Sequence

from torch import nn

#: Narrow settings per architecture: every code path runs, in milliseconds.
SMALL_OPTIONS: Dict[str, Dict[str, Any]] = {
    "allegro": dict(r_max=4.0, l_max=1, num_layers=2, num_scalar_features=8, num_tensor_features=4,
                    two_body_mlp=(16,), latent_mlp=(16,), readout_mlp=(8,), avg_num_neighbors=20.0),
    "nequip": dict(r_max=3.5, l_max=1, num_layers=2, num_features=4, radial_mlp=(16,), readout_mlp=(8,),
                   avg_num_neighbors=20.0),
}


def small_model(architecture: str, elements: Sequence[str] = ("Cu", "Au"), seed: int = 0, **overrides: Any) -> nn.Module:
    """A fresh float64 energy model of ``architecture`` with small widths and per-element energy shifts."""
    from ..models import build_model, make_config

    options = dict(SMALL_OPTIONS[architecture])
    options.setdefault("per_element_energy_shift", tuple(-1.0 - 0.5 * k for k in range(len(elements))))
    options.setdefault("per_element_energy_scale", tuple(1.0 + 0.1 * k for k in range(len(elements))))
    options.update(overrides)
    options["elements"] = tuple(elements)
    return build_model(make_config(architecture, options), seed=seed)
