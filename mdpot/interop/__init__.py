"""Deploy models trained with other packages through mdpot's model contract.

Only :mod:`mdpot.interop.nequip` exists so far: models of the ``nequip`` package (NequIP, Allegro).
"""
