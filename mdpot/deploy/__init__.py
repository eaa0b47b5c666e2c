"""Compile models to TorchScript or AOTInductor packages with metadata, self-check them, and load them back.

``compile`` deploys (script or compile, self-check, atomic write), ``aoti`` writes and reads AOTInductor packages
(``.pt2``), ``load`` reads a deployed file back, ``metadata`` states what a file records, and ``checks`` are the
checks of ``mdpot check``.
"""
from . import metadata
from .aoti import CPU_ISAS, DEFAULT_FORMAT, FORMATS
from .committee import CommitteePotential, deploy_committee
from .compile import SelfCheckError, deploy_checkpoint, deploy_model, eager_model, self_check
from .load import LoadedModel, load_model, weights_digest

__all__ = [
    "CPU_ISAS", "CommitteePotential", "DEFAULT_FORMAT", "deploy_committee", "FORMATS", "LoadedModel", "SelfCheckError", "deploy_checkpoint", "deploy_model", "eager_model", "load_model", "metadata",
    "self_check", "weights_digest",
]
