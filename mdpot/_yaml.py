"""Reading YAML files whose top level is a mapping (model, training and CLI configs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Union


def read_yaml_mapping(path: Union[str, Path], expected: str) -> Dict[str, Any]:
    """The mapping at the top of YAML file ``path``.

    Raises ``FileNotFoundError`` (with the resolved path) for a missing file and a one-line ``ValueError`` for
    invalid YAML or anything but a mapping; ``expected`` names the sections the mapping should have.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p.resolve()}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: expected a mapping with {expected}")
    return dict(data)
