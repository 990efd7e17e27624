"""What an object holds that the cyclic garbage collector walks: the memory tests' measure."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import ModuleType


def reachable(root: object) -> Iterator[object]:
    """Every tracked object ``root`` holds, through any path. Code is not walked (classes,
    modules, functions, a parse cache's wrapper): it is shared, not the root's, and leads to
    every module's globals."""
    seen = {id(root)}
    pending = [root]
    while pending:
        for item in gc.get_referents(pending.pop()):
            if id(item) in seen or not gc.is_tracked(item) or isinstance(item, type | ModuleType):
                continue
            if callable(item):
                continue
            seen.add(id(item))
            yield item
            pending.append(item)
