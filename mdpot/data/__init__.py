"""Data: neighbour lists, conversion of ASE structures into model-contract inputs, batching."""
from .batch import batch_graphs, evaluate_batch
from .neighbors import Graph, TypeMapper, atoms_to_graph

__all__ = ["Graph", "TypeMapper", "atoms_to_graph", "batch_graphs", "evaluate_batch"]
