"""Installing a strategy plug-in for one test: a module and its distribution metadata
(``entry_points.txt``) in a directory put on ``sys.path``, which is what an installed
package is to ``importlib.metadata``. Nothing is installed into the environment."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from actors.strategies import GROUP


def write_plugin(site: Path, *, kind: str, module: str, source: str, target: str) -> Path:
    """Write ``module.py`` (holding ``source``) and a distribution registering
    ``module:target`` as the strategy kind ``kind``, under ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = site / f"{module}_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\n{kind} = {module}:{target}\n")
    return site


@contextmanager
def on_path(site: Path, *modules: str) -> Iterator[Path]:
    """``site`` on ``sys.path`` for the block; its modules forgotten afterwards."""
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for module in modules:
            sys.modules.pop(module, None)
