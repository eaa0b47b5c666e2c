"""Compile models to TorchScript with metadata, self-check them, and load them back."""
from . import metadata
from .compile import LoadedModel, SelfCheckError, deploy_model, eager_model, load_model, weights_digest

__all__ = ["LoadedModel", "SelfCheckError", "deploy_model", "eager_model", "load_model", "metadata", "weights_digest"]
