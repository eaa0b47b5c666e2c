"""Reading YAML files whose top level is a mapping (model, training and CLI configs).

PyYAML implements YAML 1.1, where ``1e-3`` and ``5E-4`` are strings and ``no``/``off`` are booleans. mdpot reads
configs with YAML 1.2's rules for these instead: every decimal float form (``1e-3``, ``5E-4``, ``.5``, ``1.0e3``)
is a float and only ``true``/``false`` are booleans (so an element named ``No`` stays ``"No"``). A key given twice
in one mapping is an error rather than silently keeping the last value.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import yaml

#: Decimal floats YAML 1.2 (core schema) reads but YAML 1.1 does not: an exponent without a dot or without a sign.
_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
#: YAML 1.2 core schema booleans.
_BOOL_1_2 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats and booleans, refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping (first on line {first.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# add_implicit_resolver copies the inherited tables, so yaml.SafeLoader itself is left as it is.
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_1_2, list("tTfF"))
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+.0123456789"))


def _describe(exc: yaml.YAMLError, path: Path) -> str:
    """One line: ``path:line:column: not valid YAML: problem (context)`` (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    if "'\\t'" in problem:
        problem += " (YAML indents with spaces, not tabs)"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and cmark is not None and (mark is None or (cmark.line, cmark.column) != (mark.line, mark.column)):
        problem += f" ({context} started at line {cmark.line + 1}, column {cmark.column + 1})"
    return f"{where}: not valid YAML: {problem}"


def load_yaml(text: str, source: Union[str, Path] = "<string>") -> Any:
    """Parse YAML ``text`` with mdpot's rules (YAML 1.2 floats and booleans, no duplicate keys).

    Raises a one-line ``ValueError`` ``source:line:column: not valid YAML: ...`` for malformed input.

    Example
    -------
    >>> load_yaml("lr: 1e-3\\nelements: [Cu, No]")
    {'lr': 0.001, 'elements': ['Cu', 'No']}
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ValueError(_describe(exc, Path(source))) from None


def read_yaml_mapping(path: Union[str, Path], expected: str) -> Dict[str, Any]:
    """The mapping at the top of YAML file ``path``, read with :func:`load_yaml`'s rules.

    Raises ``FileNotFoundError`` (with the resolved path) for a missing file and a one-line ``ValueError`` for
    a folder, an unreadable or malformed file (with ``file:line:column``) or anything but a mapping;
    ``expected`` names the sections the mapping should have.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a folder; expected a YAML config file with {expected}")
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p.resolve()}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a text file (byte {exc.start} is not UTF-8); expected a YAML config with "
                         f"{expected}") from None
    data = load_yaml(text, p)
    if data is None:
        raise ValueError(f"{p}: the file is empty; expected a mapping with {expected}")
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: expected a mapping with {expected}, got a {_yaml_kind(data)}")
    return dict(data)


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "plain string"
    return type(value).__name__
