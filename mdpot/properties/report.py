"""A model against its reference calculator, side by side: the comparison, its table, JSON and plot."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .measure import Measurement, measure

__all__ = ["PROPERTIES", "QUICK_PROPERTIES", "REFERENCES", "PropertyComparison", "compare", "reference_calculator",
           "resolve_reference"]

PathLike = Union[str, os.PathLike]

#: Reference calculators: name -> description.
REFERENCES: Dict[str, str] = {"emt": "ASE's EMT", "sw": "Stillinger-Weber Si.sw through in-process LAMMPS"}

#: The rows of the table, in order: key, label, unit, number format.
PROPERTIES: Tuple[Tuple[str, str, str, str], ...] = (
    ("lattice_constant", "lattice constant a", "Å", ".4f"),
    ("cohesive_energy", "cohesive energy", "eV/atom", ".4f"),
    ("bulk_energy", "bulk energy", "eV/atom", ".4f"),
    ("isolated_atom_energy", "isolated-atom energy", "eV", ".4f"),
    ("bulk_modulus", "bulk modulus B", "GPa", ".2f"),
    ("c11", "C11", "GPa", ".2f"),
    ("c12", "C12", "GPa", ".2f"),
    ("c44", "C44 (relaxed)", "GPa", ".2f"),
    ("vacancy_formation_energy", "vacancy formation (relaxed)", "eV", ".4f"),
    ("surface_energy", "surface energy", "J/m²", ".4f"),
    ("dimer_r_min", "dimer minimum r", "Å", ".2f"),
    ("dimer_e_min", "dimer minimum E", "eV", ".4f"),
    ("dimer_e_shortest", "dimer E at shortest r", "eV", ".3f"),
    ("dimer_repulsive", "dimer repulsive to shortest r", "", ""),
    ("dimer_single_well", "dimer single well", "", ""),
    ("rdf_peak_position", "liquid RDF 1st peak r", "Å", ".3f"),
    ("rdf_peak_height", "liquid RDF 1st peak g", "", ".3f"),
    ("coordination", "liquid coordination (<3.1 Å)", "", ".3f"),
)

#: What ``--quick`` measures.
QUICK_PROPERTIES = ("lattice_constant", "cohesive_energy", "bulk_energy", "isolated_atom_energy", "bulk_modulus",
                    "dimer_r_min", "dimer_e_min", "dimer_e_shortest", "dimer_repulsive", "dimer_single_well")


def resolve_reference(name: str, elements: Sequence[str]) -> str:
    """The reference for a model's ``elements``: ``emt`` or ``sw``; ``auto`` picks EMT when it covers every
    element, Stillinger-Weber for Si.

    Raises
    ------
    ValueError
        Unknown ``name``, or a reference without parameters for one of ``elements``.
    """
    from ase.calculators.emt import parameters as emt_parameters

    choices = ("auto",) + tuple(REFERENCES)
    if name not in choices:
        raise ValueError(f"unknown reference {name!r}; expected one of {', '.join(choices)}")
    emt_elements = sorted(emt_parameters)
    if name == "auto":
        if set(elements) <= set(emt_elements):
            return "emt"
        if set(elements) == {"Si"}:
            return "sw"
        raise ValueError(f"no reference for the model's elements {' '.join(elements)}: --reference auto knows EMT "
                         f"({', '.join(emt_elements)}) and Stillinger-Weber (Si)")
    missing = [el for el in elements if el not in (emt_elements if name == "emt" else ["Si"])]
    if missing:
        covers = ", ".join(emt_elements) if name == "emt" else "Si only"
        raise ValueError(f"reference {name!r} ({REFERENCES[name]}) has no parameters for {' '.join(missing)}; "
                         f"it covers {covers}")
    return name


def reference_calculator(name: str):
    """A fresh ASE calculator for reference ``emt`` or ``sw``."""
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if name == "sw":
        from ..lammps.embedded import StillingerWeberSi

        return StillingerWeberSi()
    raise ValueError(f"unknown reference {name!r}; expected one of {', '.join(REFERENCES)}")


@dataclass
class PropertyComparison:
    """Model and reference properties of one element, side by side (see :func:`compare`).

    ``rows`` are ``(key, model, reference)`` in :data:`PROPERTIES` order for every property both measured.
    """

    element: str
    structure: str
    reference: str
    model_name: str
    r_max: float
    quick: bool
    model: Measurement
    ref: Measurement
    seconds: float

    @property
    def rows(self) -> List[Tuple[str, Any, Any]]:
        return [(key, self.model.values[key], self.ref.values[key]) for key, *_ in PROPERTIES
                if key in self.model.values and key in self.ref.values]

    def difference(self, key: str) -> Tuple[Optional[float], Optional[float]]:
        """Model minus reference and its relative value (% of the reference; ``None`` where the reference is 0),
        or ``(None, None)`` for yes/no properties."""
        m, r = self.model.values[key], self.ref.values[key]
        if isinstance(m, bool):
            return None, None
        d = m - r
        return d, (100.0 * d / abs(r) if r != 0 else (0.0 if d == 0 else None))

    def table(self) -> str:
        """The comparison as a fixed-width text table."""
        spec = {key: (label, unit, fmt) for key, label, unit, fmt in PROPERTIES}
        facet = self.model.facet or ""
        head = (f"{self.element} ({self.structure}): model {self.model_name} vs reference {self.reference} "
                f"({REFERENCES[self.reference]}){', quick subset' if self.quick else ''}")
        lines = [head, f"{'property':<31} {'unit':<8} {'model':>11} {'reference':>11} {'difference':>11} {'rel. %':>8}"]
        for key, m, r in self.rows:
            label, unit, fmt = spec[key]
            if key == "surface_energy" and facet:
                label = f"surface energy {facet}"
            if isinstance(m, bool):
                yes = {True: "yes", False: "no"}
                lines.append(f"{label:<31} {unit:<8} {yes[m]:>11} {yes[r]:>11} {'':>11} {'':>8}")
                continue
            d, rel = self.difference(key)
            rel_text = "" if rel is None else f"{rel:+.2f}"
            lines.append(f"{label:<31} {unit:<8} {m:>11{fmt}} {r:>11{fmt}} {d:>+11{fmt}} {rel_text:>8}")
        for who, meas in (("model", self.model), ("reference", self.ref)):
            lines.extend(f"note ({who}): {n}" for n in meas.notes)
        lines.append(f"{self.seconds:.1f} s in all (model {sum(self.model.seconds.values()):.1f} s, "
                     f"reference {sum(self.ref.seconds.values()):.1f} s)")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: every property with units, both values and the differences, the curves and timings."""
        spec = {key: (label, unit) for key, label, unit, _ in PROPERTIES}
        props = {}
        for key, m, r in self.rows:
            d, rel = self.difference(key)
            props[key] = {"label": spec[key][0], "unit": spec[key][1], "model": m, "reference": r,
                          "difference": d, "relative_percent": rel}
        return {
            "element": self.element, "structure": self.structure, "surface_facet": self.model.facet,
            "reference": self.reference, "reference_description": REFERENCES[self.reference],
            "model": self.model_name, "r_max": self.r_max, "quick": self.quick, "properties": props,
            "curves": {"model": self.model.curves, "reference": self.ref.curves},
            "seconds": {"total": self.seconds, "model": self.model.seconds, "reference": self.ref.seconds},
            "notes": {"model": self.model.notes, "reference": self.ref.notes},
        }

    def write_json(self, path: PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` (atomically)."""
        from .._files import atomic_write

        with atomic_write(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=2, ensure_ascii=False)
                fh.write("\n")

    def plot(self, path: PathLike) -> None:
        """PNG: equation of state, dimer curve and (Si) liquid RDF, model and reference in each panel."""
        from .plots import plot_comparison

        plot_comparison(self, path)


def compare(model_calc, reference_calc, element: str, r_max: float, reference: str, model_name: str = "model",
            quick: bool = False, log: Optional[Callable[[str], None]] = None) -> PropertyComparison:
    """Measure ``element``'s properties with a model's calculator and with a reference calculator.

    Parameters
    ----------
    model_calc, reference_calc : ase calculators
        The model (usually :class:`mdpot.MDPotCalculator`) and the reference (:func:`reference_calculator`).
    element : str
        The element measured (fcc or diamond ground state).
    r_max : float
        End of the dimer curve (Å).
    reference : str
        The reference's name (``emt``, ``sw``), for the report.
    model_name : str
        How the report names the model.
    quick : bool
        Only :data:`QUICK_PROPERTIES`.
    log : callable, optional
        Receives a progress line per finished step.

    Example
    -------
    >>> from ase.calculators.emt import EMT
    >>> c = compare(EMT(), EMT(), "Cu", 5.0, "emt", quick=True)     # doctest: +SKIP
    >>> round(c.model.values["cohesive_energy"], 2)                 # doctest: +SKIP
    3.51
    """
    from .measure import crystal_for

    crystal = crystal_for(element)
    t0 = time.perf_counter()
    say = log or (lambda line: None)
    results = []
    for who, calc in (("model", model_calc), ("reference", reference_calc)):
        results.append(measure(calc, element, r_max, quick=quick, log=lambda line, w=who: say(f"{w}: {line}")))
    return PropertyComparison(element=element, structure=crystal.structure, reference=reference,
                              model_name=model_name, r_max=float(r_max), quick=quick, model=results[0],
                              ref=results[1], seconds=time.perf_counter() - t0)
