"""Small helpers for editing QuantizationJob manifests in tests and benchmarks."""
from __future__ import annotations

from typing import Any


def set_path(doc: dict[str, Any], path: str, value: Any, sep: str = ".") -> None:
    """doc[a][b][c] = value for path "a.b.c", creating the mappings on the way."""
    *parents, leaf = path.split(sep)
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
