"""Data: labelled structures, neighbour lists, batches, and evaluation of a model on a batch.

The path of labelled data through mdpot::

    extxyz file --load_labelled--> [Labelled] --to_samples--> [Sample] (Graph + label tensors)
                --collate--> Batch --evaluate(module, batch)--> Prediction --> loss / metrics

Unlabelled structures take the short way: ``batch_structures(atoms_list, r_max, elements)`` or
``Batch.from_graphs(graphs)``, then :func:`evaluate`. ``mdpot.data.reference`` generates reference
datasets (``mdpot data``) and labels given structures the same way (``mdpot label``, :mod:`.label_cli`).

Example
-------
>>> from mdpot.data import collate, evaluate, load_labelled, to_samples
>>> samples = to_samples(load_labelled("cu_val.xyz"), r_max=5.0, elements=("Cu",))
>>> pred = evaluate(model, collate(samples), stress=True)

Names are imported lazily so that ``mdpot.cli`` can add the ``data`` subparser without loading torch.
"""
import importlib

_EXPORTS = {
    "Graph": "neighbors", "TypeMapper": "neighbors", "atoms_to_graph": "neighbors",
    "Batch": "batch", "batch_graphs": "batch", "batch_structures": "batch",
    "Prediction": "evaluation", "evaluate": "evaluation",
    "Labelled": "labelled", "Sample": "labelled", "collate": "labelled", "element_counts": "labelled",
    "infer_elements": "labelled", "load_labelled": "labelled", "read_labels": "labelled",
    "read_structures": "labelled", "to_samples": "labelled",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mdpot.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
