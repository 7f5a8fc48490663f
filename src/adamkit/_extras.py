"""Optional dependencies, imported when a feature first needs them.

``pip install adamkit`` needs only torch, NumPy and numba. The rest are extras:

* ``adamkit[viz]``: matplotlib, for every picture (``adamkit viz``, ``demo --out``,
  ``diagnostics.plot_recording``);
* ``adamkit[demo]``: scikit-learn (the digits data), matplotlib and tqdm: everything
  ``adamkit demo`` and ``adamkit claims`` use.

tqdm only draws progress bars: without it they are left out (:func:`progress`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# module name: (package to install, its extra)
PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}


class MissingExtra(ImportError):
    """A feature needs a package that is not installed; the message names the extra."""

    def __init__(self, module: str, extra: str, needed_for: str) -> None:
        package = PACKAGES.get(module, module)
        super().__init__(
            f"{needed_for} needs {package}, which is not installed: pip install 'adamkit[{extra}]'",
            name=module,
        )
        self.extra = extra


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """``import module``, or raise :class:`MissingExtra` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(module, extra, needed_for) from error


class _NoBar:
    """What :func:`progress` gives without tqdm: the same calls, nothing drawn."""

    def __init__(self, iterable: Any = None, **_: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "") -> None:
        pass


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress bar (same arguments), or one that draws nothing when tqdm is not
    installed or ``disable=True``."""
    if kwargs.get("disable"):
        return _NoBar(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, **kwargs)
