"""The cache key of a builder's output: a hash of the code that produced it and of its inputs.

One function, `cache_key`, serves every builder in `behrt_hf.data_builders`:

- the synthetic cohort hashes its whole generator package (every `.py` file under
  `data_builders/synthetic/`, found on disk, so a module added later is covered without
  editing a list), its builder module and the shipped code table;
- the readers hash their own module and every `behrt_hf` module it uses, followed through
  imports (`local_modules`), plus each input file's path, size and modification time.

Editing any of these sources changes the key, so `datasets` never serves a cache built by other
code. Files are hashed by their path relative to the package and their bytes, in sorted order, so
the key is the same across calls, processes and machines.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

PACKAGE = "behrt_hf"


def source_files(modules: Iterable[ModuleType]) -> list[Path]:
    """The source files of `modules`, sorted: a package stands for every `.py` file below its folder."""
    return sorted(_named_sources(modules).values())


def _named_sources(modules: Iterable[ModuleType]) -> dict[str, Path]:
    """name -> file; the name (dotted module name, plus the path inside a package) is the same on every install."""
    named: dict[str, Path] = {}
    for module in modules:
        path = Path(inspect.getfile(module)).resolve()
        if hasattr(module, "__path__"):  # a package: all of its modules, subpackages included
            for file in path.parent.rglob("*.py"):
                named[f"{module.__name__}/{file.relative_to(path.parent).as_posix()}"] = file.resolve()
        else:
            named[module.__name__] = path
    unique = {path: name for name, path in sorted(named.items())}  # a module also reached through its package
    return {name: path for path, name in unique.items()}


def local_modules(module: ModuleType, package: str = PACKAGE) -> list[ModuleType]:
    """`module` and every module of `package` it uses (its functions', classes' and modules'
    modules, followed through their own imports), in a stable order. Packages themselves are left
    out: their `__init__` re-exports much that a reader does not run (pass one to `cache_key`
    explicitly to hash all of it)."""
    seen: dict[str, ModuleType] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        if current.__name__ in seen:
            continue
        seen[current.__name__] = current
        for value in vars(current).values():
            name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            used = sys.modules.get(name) if isinstance(name, str) and name.startswith(package + ".") else None
            if used is not None and not hasattr(used, "__path__"):
                todo.append(used)
    return [seen[name] for name in sorted(seen)]


def cache_key(
    modules: Iterable[ModuleType], *, data_files: Iterable[Path] = (), input_files: Iterable[Path] = ()
) -> str:
    """SHA-256 (16 hex digits) over the sources of `modules` (see `source_files`), the bytes of
    `data_files` (tables the code reads, e.g. the synthetic code table) and the path, size and
    mtime of `input_files` (data a reader reads, too large to hash whole)."""
    digest = hashlib.sha256()
    named = sorted(_named_sources(modules).items()) + sorted((Path(f).name, Path(f)) for f in data_files)
    for name, path in named:
        digest.update(name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    for path in sorted(Path(f) for f in input_files):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


__all__ = ["cache_key", "local_modules", "source_files"]
