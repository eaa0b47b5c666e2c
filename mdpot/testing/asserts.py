"""The physics asserts of the test matrix (``docs/testing.md``), shipped so that every architecture, the deploy
self-check and ``mdpot check`` run the same checks with the same tolerances.

Every assert takes an ASE calculator or a loaded model (``mdpot.deploy.LoadedModel``, evaluated through its
contract module), never changes the caller's ``Atoms``, raises ``AssertionError`` with the quantity, the max
error, the tolerance and the magnitude, and returns the max errors it saw.

Tolerance scaling (decided here, once; the numbers are :func:`mdpot.testing.tolerance`'s):

- equivariance, wrap, separability: ``atol = rtol = tol``;
- momentum: ``tol * N`` in float64, ``tol * sqrt(N)`` in float32 (rounding of N independent float32 terms);
- finite-difference forces: absolute ``tol`` in float64 and ``tol * max|F|`` in float32 (row 4). With
  ``scale_with_forces=True`` both become ``tol * max(1, max|F|)``: for trained models, whose forces on a compact
  cell reach hundreds of eV/Å, the O(d²) error of central differences grows with the force scale. ``mdpot
  check`` uses that; the test suite keeps the strict default;
- finite-difference stress: relative to ``max|stress|``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from scipy.spatial.transform import Rotation

from ..data import Graph
from .contract import CONTRACT_OUTPUTS, as_calculator, contract_outputs, to_numpy, with_calculator
from .tolerances import dtype_name, tolerance

ArrayLike = Union[np.ndarray, torch.Tensor, float]
DType = Union[str, torch.dtype]

#: The symmetry operations :func:`assert_equivariant` applies.
EQUIVARIANCE_KINDS = ("rotation", "reflection", "translation", "permutation")


def assert_allclose(actual: ArrayLike, expected: ArrayLike, tol: float, what: str, rtol: Optional[float] = None) -> float:
    """``|actual - expected| <= tol + rtol * |expected|`` elementwise (``rtol`` defaults to ``tol``); returns the max
    absolute error."""
    a, b = to_numpy(actual), to_numpy(expected)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} differs from expected {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AssertionError(f"{what}: non-finite values")
    rtol = tol if rtol is None else rtol
    err = np.abs(a - b)
    bound = tol + rtol * np.abs(b)
    if (err > bound).any():
        k = int(np.argmax(err - bound))
        raise AssertionError(
            f"{what}: max |error| {err.max():.3e} exceeds tolerance {tol:.1e} (atol) + {rtol:.1e} (rtol); "
            f"worst at flat index {k}: {a.flat[k]:.12g} vs {b.flat[k]:.12g}; magnitude max |expected| "
            f"{np.abs(b).max() if b.size else 0.0:.3e}")
    return float(err.max()) if err.size else 0.0


def compare_contract(actual: Any, expected: Any, graph: Graph, dtype: DType, what: str = "contract") -> Dict[str, float]:
    """Run two contract modules on ``graph`` and compare every output (row 1: the deploy self-check).

    Compares per-atom energy (eV), forces (eV/Å), virial (eV), per-atom virial (eV) and total energy (eV) with
    ``tolerance("deploy", dtype)`` as atol and rtol. Raises ``AssertionError`` naming ``what``, the quantity, the
    max error, the tolerance and the magnitude; returns ``{quantity: max |error|}``.
    """
    tol = tolerance("deploy", dtype)
    got = contract_outputs(actual, graph)
    want = contract_outputs(expected, graph)
    errors = {name: assert_allclose(a, b, tol, f"{what} {name}") for name, a, b in zip(CONTRACT_OUTPUTS, got, want)}
    errors["total energy"] = assert_allclose(got[0].sum(), want[0].sum(), tol, f"{what} total energy")
    return errors


def assert_equivariant(calc_or_model: Any, atoms: Atoms, dtype: DType, kinds: Sequence[str] = EQUIVARIANCE_KINDS,
                       seed: int = 7) -> Dict[str, float]:
    """Row 3: energy invariant, forces and stress equivariant under rotation, reflection (a rotation times a
    mirror), translation and permutation of the atoms. Stress is checked when the cell is 3-D.

    ``seed`` draws the rotation. Returns ``{"<quantity> under <kind>": max |error|}``.
    """
    unknown = sorted(set(kinds) - set(EQUIVARIANCE_KINDS))
    if unknown:
        raise ValueError(f"unknown symmetry operation(s) {unknown}; expected some of {list(EQUIVARIANCE_KINDS)}")
    calc = as_calculator(calc_or_model)
    ref = with_calculator(atoms, calc)
    with_stress = atoms.cell.rank == 3
    e0, f0 = ref.get_potential_energy(), ref.get_forces()
    s0 = ref.get_stress(voigt=False) if with_stress else None
    tol = tolerance("equivariance", dtype)
    errors: Dict[str, float] = {}
    for kind in kinds:
        other = atoms.copy()
        forces_map = lambda f: f  # noqa: E731
        stress_map = lambda s: s  # noqa: E731
        if kind in ("rotation", "reflection"):
            rot = Rotation.random(random_state=seed).as_matrix()
            if kind == "reflection":
                rot = rot @ np.diag([1.0, 1.0, -1.0])
            other.set_cell(atoms.cell.array @ rot.T)
            other.positions = atoms.positions @ rot.T
            forces_map = lambda f: f @ rot.T  # noqa: E731
            stress_map = lambda s: rot @ s @ rot.T  # noqa: E731
        elif kind == "translation":
            other.positions += np.array([1.3, -7.1, 0.4])
        else:
            perm = np.random.default_rng(1).permutation(len(atoms))
            other = atoms[perm]
            forces_map = lambda f: f[perm]  # noqa: E731
        other.calc = calc
        errors[f"energy under {kind}"] = assert_allclose(other.get_potential_energy(), e0, tol, f"energy under {kind}")
        errors[f"forces under {kind}"] = assert_allclose(other.get_forces(), forces_map(f0), tol, f"forces under {kind}")
        if with_stress:
            errors[f"stress under {kind}"] = assert_allclose(other.get_stress(voigt=False), stress_map(s0), tol,
                                                             f"stress under {kind}")
    return errors


def assert_forces_match_fd(calc_or_model: Any, atoms: Atoms, dtype: DType, d: Optional[float] = None,
                           scale_with_forces: bool = False) -> float:
    """Row 4: forces equal minus the central-difference gradient of the energy (ASE's helper, step ``d`` Å).

    The default step is 1e-4 Å in float64 (O(d²) truncation far below 1e-6) and 1e-2 Å in float32 (energies
    round at ~1e-7 relative, so the step must be large enough that rounding / 2d stays below the tolerance).
    Tolerance (absolute): see the module docstring; ``scale_with_forces`` is for trained models. Returns the
    max error, eV/Å.
    """
    dtype = dtype_name(dtype)
    if d is None:
        d = 1e-4 if dtype == "float64" else 1e-2
    moved = with_calculator(atoms, as_calculator(calc_or_model))
    f = moved.get_forces()
    fd = calculate_numerical_forces(moved, eps=d)
    f_max = float(np.abs(f).max()) if f.size else 0.0
    if scale_with_forces:
        scale = max(1.0, f_max)
    else:
        scale = 1.0 if dtype == "float64" else f_max
    return assert_allclose(f, fd, tolerance("fd_forces", dtype) * scale, "forces vs finite differences", rtol=0.0)


def assert_stress_matches_fd(calc_or_model: Any, atoms: Atoms, dtype: DType, d: Optional[float] = None) -> float:
    """Row 5: stress (eV/Å³) equals the central-difference strain derivative of the energy (ASE's helper, strain
    step ``d``: 1e-5 in float64, 1e-3 in float32), within ``tolerance("fd_stress")`` relative to max |stress|.
    Needs a 3-D cell. Returns the relative error."""
    dtype = dtype_name(dtype)
    if atoms.cell.rank < 3:
        raise ValueError(f"finite-difference stress needs a 3-D cell; this cell has rank {atoms.cell.rank}")
    if d is None:
        d = 1e-5 if dtype == "float64" else 1e-3
    strained = with_calculator(atoms, as_calculator(calc_or_model))
    s = strained.get_stress()
    fd = calculate_numerical_stress(strained, eps=d)
    tol = tolerance("fd_stress", dtype)
    err = float(np.abs(s - fd).max() / np.abs(s).max())
    if not err < tol:
        raise AssertionError(f"stress vs finite differences: relative error {err:.2e} > {tol:.0e} "
                             f"(max |stress| {np.abs(s).max():.2e} eV/Å³)")
    return err


def assert_momentum(calc_or_model: Any, atoms: Atoms, dtype: DType) -> float:
    """Row 9: the forces sum to zero (no external force on a periodic or isolated system); tolerance
    ``tol * N`` in float64, ``tol * sqrt(N)`` in float32. Returns max |ΣF|, eV/Å."""
    dtype = dtype_name(dtype)
    n = len(atoms)
    total = with_calculator(atoms, as_calculator(calc_or_model)).get_forces().sum(axis=0)
    tol = tolerance("momentum", dtype) * (n if dtype == "float64" else np.sqrt(n))
    return assert_allclose(total, np.zeros(3), tol, "sum of forces")
