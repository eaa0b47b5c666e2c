"""Architectures (frozen config dataclass -> nn.Module), the model contract wrapper and checkpoints."""
from .allegro import Allegro
from .checkpoint import ARCHITECTURES, build_model, create_checkpoint, load_checkpoint, make_config, save_checkpoint
from .config import DEFAULT_MODEL, AllegroConfig, ModelConfig, NequIPConfig
from .nequip import NequIP
from .potential import MessagePassingPotential, Potential, contract_potential

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Allegro",
    "AllegroConfig",
    "MessagePassingPotential",
    "ModelConfig",
    "NequIP",
    "NequIPConfig",
    "Potential",
    "build_model",
    "contract_potential",
    "create_checkpoint",
    "load_checkpoint",
    "make_config",
    "save_checkpoint",
]
