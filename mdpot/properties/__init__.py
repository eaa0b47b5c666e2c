"""Property benchmark: a deployed model against its reference potential, as a user would measure a potential.

Lattice constant, cohesive energy, bulk modulus, C11, C12, C44, relaxed vacancy formation energy, a relaxed
surface energy, the dimer curve (is it repulsive all the way down?) and, for Si, the liquid RDF, each measured
with the model's calculator and with the reference's (EMT, or Stillinger-Weber through in-process LAMMPS), with
ASE's tools (``ase.eos``, filters, optimisers, MD). ``mdpot properties MODEL`` runs it from the command line.

Example
-------
>>> from ase.calculators.emt import EMT
>>> from mdpot import MDPotCalculator
>>> from mdpot.properties import compare
>>> c = compare(MDPotCalculator("cu.pt"), EMT(), "Cu", r_max=5.0, reference="emt")   # doctest: +SKIP
>>> print(c.table())                                                                 # doctest: +SKIP
"""
from .measure import LIQUID, Crystal, LiquidProtocol, Measurement, crystal_for, measure, rdf_peak
from .report import (PROPERTIES, QUICK_PROPERTIES, REFERENCES, PropertyComparison, compare, reference_calculator,
                     resolve_reference)

__all__ = [
    "LIQUID", "PROPERTIES", "QUICK_PROPERTIES", "REFERENCES", "Crystal", "LiquidProtocol", "Measurement",
    "PropertyComparison", "compare", "crystal_for", "measure", "rdf_peak", "reference_calculator",
    "resolve_reference",
]
