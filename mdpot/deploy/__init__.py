"""Compile models to TorchScript with metadata, self-check them, and load them back.

``compile`` deploys (script, self-check, atomic write), ``load`` reads a deployed file back, ``metadata`` states
what a file records, and ``checks`` are the checks of ``mdpot check``.
"""
from . import metadata
from .compile import SelfCheckError, deploy_checkpoint, deploy_model, eager_model, self_check
from .load import LoadedModel, load_model, weights_digest

__all__ = [
    "LoadedModel", "SelfCheckError", "deploy_checkpoint", "deploy_model", "eager_model", "load_model", "metadata",
    "self_check", "weights_digest",
]
