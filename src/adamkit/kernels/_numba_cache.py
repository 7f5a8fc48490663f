"""numba's on-disk cache, stamped with every source file the cached loops are built from.

numba keys a cached function to its own file's timestamp. The spec loops in
:mod:`adamkit.kernels._numba_driver` are compiled from code in other files too (each
algorithm's element in :mod:`adamkit.algorithms`, the other ``_numba_*`` modules): an
edit there would leave a stale compiled loop in the cache. Functions of the modules named
here, and of the entry points generated from them (:mod:`adamkit.kernels._numba_codegen`,
whose files are named by a hash of the same sources), get a stamp that hashes all those files
instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from numba.core import caching

_PACKAGE = Path(__file__).resolve().parent.parent
_STAMPED_MODULES = {
    str(_PACKAGE / "kernels" / name) for name in ("_numba_driver.py", "_numba_lowbit.py")
}
_STAMPED_DIRECTORIES: set[str] = set()  # where the generated entry points are written


def stamp_directory(path: Path) -> None:
    """Stamp the functions of every file in ``path`` too."""
    _STAMPED_DIRECTORIES.add(str(Path(path).resolve()))


def _stamped_file(py_file: str) -> bool:
    path = Path(py_file).resolve()
    return str(path) in _STAMPED_MODULES or str(path.parent) in _STAMPED_DIRECTORIES


def _sources() -> set[Path]:
    """The files the spec loops are compiled from."""
    return {*(_PACKAGE / "algorithms").glob("*.py"), *(_PACKAGE / "kernels").glob("_numba_*.py")}


def _sources_hash(files: Iterable[Path] | None = None) -> str:
    digest = hashlib.sha256()
    for path in sorted(_sources() if files is None else files, key=lambda p: p.name):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_STAMP = _sources_hash()


def _stamped(locator: type) -> type:
    class Stamped(locator):  # type: ignore[misc, valid-type]
        @classmethod
        def from_function(cls, py_func, py_file):
            if not _stamped_file(py_file):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return _STAMP

    Stamped.__name__ = Stamped.__qualname__ = f"Stamped{locator.__name__}"
    return Stamped


def install() -> None:
    """Put the stamped locators first in numba's search (once)."""
    classes = caching.CacheImpl._locator_classes
    if any(getattr(c, "_adamkit", False) for c in classes):
        return
    bases = [
        caching.UserProvidedCacheLocator,  # NUMBA_CACHE_DIR, when set
        caching.InTreeCacheLocator,
        caching.UserWideCacheLocator,
    ]
    stamped = [_stamped(base) for base in bases]
    for locator in stamped:
        locator._adamkit = True
    classes[:0] = stamped
