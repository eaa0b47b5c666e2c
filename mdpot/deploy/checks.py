"""The checks of ``mdpot check``: integrity, agreement with a checkpoint, and physics, through the shipped test kit
on the model's contract module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from ..models import load_checkpoint
from ..testing.asserts import assert_equivariant, assert_forces_match_fd, assert_momentum
from ..testing.structures import sample_structure
from .compile import SelfCheckError, eager_model, self_check
from .load import LoadedModel


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and a one-line detail (max error, or the failure)."""

    name: str
    passed: bool
    detail: str


def _run(name: str, fn: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, fn())
    except (AssertionError, SelfCheckError, ValueError) as exc:
        return CheckResult(name, False, str(exc).splitlines()[0])


def run_checks(model: LoadedModel, checkpoint: Optional[str] = None, seed: int = 0) -> List[CheckResult]:
    """Run every check on ``model`` (its weights digest was verified on loading); a failing check is reported,
    not raised.

    With ``checkpoint``, the model is compared with the checkpoint's eager model (row 1). The physics checks
    (rows 3, 4 and 9 of ``docs/testing.md``) run on a small periodic sample structure; the finite-difference
    tolerance scales with the largest force (``scale_with_forces``), as trained models need.
    """
    dtype = model.metadata["model_dtype"]
    atoms = sample_structure(model.elements, model.r_max, seed=seed)
    results = [CheckResult("weights digest", True, f"sha256 {model.metadata['weights_sha256'][:16]}… matches")]

    if checkpoint is not None:
        def against_checkpoint() -> str:
            energy_model, payload = load_checkpoint(checkpoint, dtype=getattr(torch, dtype))
            theirs = (payload["architecture"], tuple(energy_model.config.elements))
            ours = (model.metadata["architecture"], tuple(model.elements))
            if theirs != ours:
                raise ValueError(f"{checkpoint} holds {theirs[0]} for {' '.join(theirs[1])}, the deployed model is "
                                 f"{ours[0]} for {' '.join(ours[1])}: not the checkpoint it was deployed from")
            eager = eager_model(energy_model, dtype)
            errs = self_check(model.module, eager.module, model.elements, model.r_max, dtype, seed=seed)
            return "max |Δ| " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())

        results.append(_run("matches checkpoint", against_checkpoint))

    def forces_fd() -> str:
        err = assert_forces_match_fd(model, atoms, dtype, scale_with_forces=True)
        return f"max |F - F_fd| {err:.1e} eV/Å"

    def equivariance() -> str:
        errs = assert_equivariant(model, atoms, dtype, seed=seed)
        return f"max |Δ| {max(errs.values()):.1e} over rotation, reflection, translation, permutation"

    def momentum() -> str:
        return f"|ΣF| {assert_momentum(model, atoms, dtype):.1e} eV/Å"

    results += [_run("forces = -dE/dx", forces_fd), _run("equivariance", equivariance), _run("momentum", momentum)]
    return results
