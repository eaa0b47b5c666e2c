"""Architectures (frozen config dataclass -> nn.Module), the model contract wrapper and checkpoints."""
from .allegro import Allegro
from .checkpoint import ARCHITECTURES, build_model, create_checkpoint, load_checkpoint, make_config, save_checkpoint
from .config import AllegroConfig, ModelConfig
from .potential import Potential

__all__ = [
    "ARCHITECTURES",
    "Allegro",
    "AllegroConfig",
    "ModelConfig",
    "Potential",
    "build_model",
    "create_checkpoint",
    "load_checkpoint",
    "make_config",
    "save_checkpoint",
]
