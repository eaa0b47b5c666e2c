"""Architectures (frozen config dataclass -> nn.Module), the model contract wrapper and checkpoints."""
from .allegro import Allegro
from .checkpoint import ARCHITECTURES, build_model, create_checkpoint, load_checkpoint, make_config, save_checkpoint
from .config import DEFAULT_MODEL, AllegroConfig, ModelConfig, NequIPConfig
from .nequip import NequIP
from .potential import Potential

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Allegro",
    "AllegroConfig",
    "ModelConfig",
    "NequIP",
    "NequIPConfig",
    "Potential",
    "build_model",
    "create_checkpoint",
    "load_checkpoint",
    "make_config",
    "save_checkpoint",
]
