"""numba entry points generated per spec and cell, each in a file of its own.

numba's on-disk cache keys a compiled function by its file, qualified name and line, so entry
points made by a closure factory would all share one cache slot. The drivers
(:mod:`adamkit.kernels._numba_driver`, :mod:`adamkit.kernels._numba_lowbit`) instead write
the source of a *cell*'s entry points (a spec and which of its state slots are stored, as
literals) to a file named by the spec, the cell and a hash of every source file the loops are
built from, import it with the spec's compiled functions as globals, and numba caches each
function under its file. A changed spec or driver gives new files; an unchanged one finds its
compiled loops in numba's cache in a new process.

The files go to ``adamkit_loops`` in ``NUMBA_CACHE_DIR`` when it is set, else in numba's
user-wide cache directory (a per-user temporary directory if that is not writable). Each is
written to a temporary name and renamed into place, so processes sharing the directory never
read a partial file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from numba.core import config
from numba.misc.appdirs import AppDirs

from ..algorithms._spec import TENSOR_SLOTS, AlgorithmSpec
from . import _numba_cache

_LOCK = threading.RLock()  # one thread writes and imports a cell's module
_HASHES: dict[tuple[Any, ...], str] = {}
_ANNOUNCED = threading.Event()  # the first-compile notice is printed once per process


def directory() -> Path:
    """Where the generated files go (created; numba's cache for them goes beside them)."""
    base = config.CACHE_DIR or AppDirs(appname="numba", appauthor=False).user_cache_dir
    user = os.getuid() if hasattr(os, "getuid") else "user"
    for path in (
        Path(base) / "adamkit_loops",
        Path(tempfile.gettempdir()) / f"adamkit_loops_{user}",
    ):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            path = path.resolve()
            _numba_cache.stamp_directory(path)
            return path
    raise OSError(f"no writable directory for adamkit's generated numba loops (tried {base})")


def identifier(spec: AlgorithmSpec) -> str:
    """The spec's name as a Python identifier (for function and file names)."""
    return re.sub(r"\W", "_", spec.name)


def cell_code(stored: Iterable[bool]) -> str:
    """A cell's name: ``s`` and one digit per slot, 1 where it is stored (``s110``)."""
    return "s" + "".join("1" if s else "0" for s in stored)


def stored_slots(spec: AlgorithmSpec, flags: Iterable[Any]) -> tuple[bool, ...]:
    """Which of the drivers' ``TENSOR_SLOTS`` slots a group with ``flags`` stores (the
    spec's ``slot_flags``; a slot past the spec's last is a stand-in, never stored)."""
    used = spec.slots_used(tuple(bool(f) for f in flags))
    return (*used, *(False,) * (TENSOR_SLOTS - len(used)))


def cells(spec: AlgorithmSpec) -> list[tuple[bool, ...]]:
    """Every cell of ``spec``: each combination of its flag-switched slots, all first."""
    switches = sorted({i for i in spec.slot_flags if i is not None})
    result = []
    for n in range(2 ** len(switches)):
        flags = [False] * (max(switches, default=-1) + 1)
        for bit, index in enumerate(switches):
            flags[index] = not (n >> bit) & 1
        stored = stored_slots(spec, flags)
        if stored not in result:
            result.append(stored)
    return result


def conditions(spec: AlgorithmSpec, stored: tuple[bool, ...], flags: str = "flags") -> str:
    """A Python condition on the ``flags`` array that holds exactly in cell ``stored``."""
    terms = []
    for slot, index in enumerate(spec.slot_flags):
        if index is not None and slot < len(spec.tensor_state):
            terms.append(f"{flags}[{index}] {'!=' if stored[slot] else '=='} 0")
    return " and ".join(dict.fromkeys(terms)) or "True"


def sources_hash(spec: AlgorithmSpec, *extra: str) -> str:
    """A hash of every file the spec's loops are built from (the drivers, the algorithms, and
    the spec's own module wherever it is), of the spec's functions, and of ``extra``."""
    functions = (spec.element, spec.advance, spec.tensor_scalars)
    functions += (spec.reduction,) if spec.reduction is not None else ()
    key = (spec.name, *functions, *extra)
    if key in _HASHES:
        return _HASHES[key]
    package = _numba_cache._sources()
    files = (inspect.getsourcefile(f) for f in functions)
    own = {Path(file).resolve() for file in files if file} - package
    digest = hashlib.sha256(
        (_numba_cache._STAMP if not own else _numba_cache._sources_hash(package | own)).encode()
    )
    for f in functions:
        digest.update(f"{f.__module__}.{f.__qualname__}".encode())
        digest.update(f.__code__.co_code)
        digest.update(repr(f.__code__.co_consts).encode())
    for text in (spec.name, *extra):
        digest.update(text.encode())
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def announce_compile(entry_points: Iterable[Any], what: str, estimate: str) -> None:
    """Say once per process, on stderr, that a fused kernel is about to be compiled: when
    numba's cache has a copy of none of ``entry_points`` (a fresh machine, container or CI
    job), the step that first calls one takes seconds, which should not look like a hang.
    (Where one is cached, the others were compiled before too, or are compiled silently.)"""
    if _ANNOUNCED.is_set():
        return
    try:
        missing = all(not os.path.exists(f._cache._cache_file._index_path) for f in entry_points)
    except AttributeError:  # numba's cache internals changed: no notice rather than an error
        return
    if missing and not _ANNOUNCED.is_set():
        _ANNOUNCED.set()
        print(
            f"adamkit: compiling the fused CPU kernel for {what} on its first use here "
            f"({estimate}); numba caches it in {directory()} for later runs. Further kernels "
            "compile the same way, without this notice.",
            file=sys.stderr,
        )


def load(stem: str, source: str, namespace: Callable[[], Mapping[str, Any]]) -> ModuleType:
    """The module of ``source`` in file ``<stem>.py`` of :func:`directory`, run with the
    globals ``namespace()`` gives (made only when the module is first imported here)."""
    name = f"adamkit_loops_{stem}"
    with _LOCK:
        module = sys.modules.get(name)
        if module is not None:
            return module
        path = directory() / f"{stem}.py"
        if not (path.exists() and path.read_text() == source):
            temporary = path.with_name(f".{stem}.{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_text(source)
            os.replace(temporary, path)
        found = importlib.util.spec_from_file_location(name, path)
        assert found is not None and found.loader is not None
        module = importlib.util.module_from_spec(found)
        module.__dict__.update(namespace())
        # numba's cache rebuilds a loaded function's environment by importing its module
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
