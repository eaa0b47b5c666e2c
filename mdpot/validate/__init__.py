"""Errors of a model against labelled structures: ``mdpot validate model.pt data.xyz`` and its Python API.

Reads the data and evaluates the model through :mod:`mdpot.data` (``load_labelled`` → ``collate`` →
``evaluate``), the same path training takes; :mod:`mdpot.validate.cli` registers the subcommand.

Example
-------
>>> from mdpot.validate import validate
>>> report = validate("cu.pt", "cu_test.xyz")
>>> print(report.table())
"""
from .report import ErrorStats, ThresholdExceeded, ValidationReport, validate, write_json

__all__ = ["ErrorStats", "ThresholdExceeded", "ValidationReport", "validate", "write_json"]
