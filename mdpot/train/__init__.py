"""Training: ``mdpot train config.yaml`` and its Python API.

Example
-------
>>> from mdpot.train import load_train_config, train
>>> result = train(load_train_config("train.yaml"), "runs/cu")
>>> result.best_checkpoint            # deploy with `mdpot deploy runs/cu/best.ckpt -o cu.pt`

Reading labelled data, batches and :func:`mdpot.data.evaluate` live in :mod:`mdpot.data`; this package adds
what is particular to training (fitted initial statistics, the loss, the loop). Names are imported lazily so
that ``mdpot.cli`` can add the ``train`` subparser (from ``mdpot.train.cli``) without loading torch.
"""
import importlib

_EXPORTS = {
    "DataConfig": "config", "TrainConfig": "config", "TrainingConfig": "config", "load_train_config": "config",
    "fit_energy_shift": "fitting", "force_rms": "fitting", "mean_neighbors": "fitting", "split_indices": "fitting",
    "MetricAccumulator": "loss", "errors": "loss", "loss_from_errors": "loss",
    "EMA": "trainer", "TrainResult": "trainer", "Trainer": "trainer", "train": "trainer",
    "member_config": "trainer", "train_committee": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mdpot.train' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
