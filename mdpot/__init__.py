"""mdpot: equivariant machine-learning interatomic potentials from training to LAMMPS and ASE.

Public API::

    from mdpot import MDPotCalculator, deploy_model, load_model
    from mdpot.models import Allegro, AllegroConfig

The top level imports torch lazily: the LAMMPS launcher imports ``mdpot.lammps.plugin`` on every start and
must stay fast.
"""
from ._version import __version__

__all__ = ["MDPotCalculator", "__version__", "deploy_model", "load_model"]


def __getattr__(name):
    if name == "MDPotCalculator":
        from .calculator import MDPotCalculator

        return MDPotCalculator
    if name in ("deploy_model", "load_model"):
        from . import deploy

        return getattr(deploy, name)
    raise AttributeError(f"module 'mdpot' has no attribute {name!r}")
