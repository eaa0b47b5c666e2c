"""Self-checks of a deployed model (``mdpot check``): integrity, agreement with its checkpoint, and physics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from scipy.spatial.transform import Rotation

from ..testing.asserts import assert_allclose
from ..testing.structures import sample_structure
from ..testing.tolerances import tolerance
from .compile import LoadedModel, SelfCheckError, eager_model, self_check


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


def _run(name: str, fn) -> CheckResult:
    try:
        detail = fn()
        return CheckResult(name, True, detail)
    except (AssertionError, SelfCheckError, ValueError) as exc:
        return CheckResult(name, False, str(exc).splitlines()[0])


def run_checks(model: LoadedModel, checkpoint: Optional[str] = None, seed: int = 0) -> List[CheckResult]:
    """Run every check; a failing check is reported, not raised."""
    from ..calculator import MDPotCalculator

    dtype = model.metadata["model_dtype"]
    elements = model.elements
    atoms = sample_structure(elements, model.r_max, seed=seed)
    atoms.calc = MDPotCalculator(model)
    results = [CheckResult("weights digest", True, f"sha256 {model.metadata['weights_sha256'][:16]}… matches")]

    if checkpoint is not None:
        from ..models import load_checkpoint

        def against_checkpoint():
            eager = eager_model(load_checkpoint(checkpoint)[0], dtype)
            errs = self_check(model.module, eager.module, elements, model.r_max, dtype, seed=seed)
            return "max |Δ| " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())

        results.append(_run("matches checkpoint", against_checkpoint))

    def forces_fd():
        f = atoms.get_forces()
        nf = atoms.calc.calculate_numerical_forces(atoms, d=1e-2 if dtype == "float32" else 1e-4)
        # Central differences with step d carry an O(d^2) error of their own (third derivative), which grows
        # with the force scale: a trained model on this compact test cell can see forces of hundreds of eV/Å.
        # The tolerance is therefore per eV/Å of the largest force (1e-6 absolute for forces up to 1 eV/Å).
        tol = tolerance("fd_forces", dtype) * max(1.0, float(np.abs(f).max()))
        assert_allclose(f, nf, tol, "forces vs finite differences", rtol=0.0)
        return f"max |F - F_fd| {np.abs(f - nf).max():.1e} eV/Å"

    def rotation():
        e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
        rot = Rotation.random(random_state=seed).as_matrix()
        rotated = atoms.copy()
        rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        rotated.positions = atoms.positions @ rot.T
        rotated.calc = atoms.calc
        tol = tolerance("equivariance", dtype)
        assert_allclose(rotated.get_potential_energy(), e0, tol, "energy under rotation")
        assert_allclose(rotated.get_forces(), f0 @ rot.T, tol, "forces under rotation")
        return f"|ΔE| {abs(rotated.get_potential_energy() - e0):.1e} eV"

    def momentum():
        total = atoms.get_forces().sum(axis=0)
        n = len(atoms)
        tol = tolerance("momentum", dtype) * (n if dtype == "float64" else np.sqrt(n))
        assert_allclose(total, np.zeros(3), tol, "sum of forces")
        return f"|ΣF| {np.abs(total).max():.1e} eV/Å"

    results += [_run("forces = -dE/dx", forces_fd), _run("rotation invariance", rotation), _run("momentum", momentum)]
    return results
