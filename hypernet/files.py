"""Files and folders that appear whole or not at all.

Every output is written under a temporary name next to its destination and renamed into place,
so a reader (another worker sharing the cache, a user listing the folder) sees the old file or
the new one, never half of one, and a failed or killed run leaves nothing behind but, at worst,
a hidden `.tmp` that the next run ignores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def require_absent(out: Path) -> None:
    """Outputs never overwrite: checked before any work, and again when the output is kept."""
    if Path(out).exists():
        raise InputError(f"{out} already exists; choose a new --out or remove it")


def _as_umask_allows(path: Path, mode: int) -> None:
    """mkstemp/mkdtemp make 0600/0700 for the work in progress; the result is shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextmanager
def atomic_write(file: Path) -> Iterator[Path]:
    """Yield a free temporary path next to `file`; it replaces `file` only if the block
    finishes without error. Writers racing for one file each use their own temporary name,
    and the last rename wins."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # free for writers that create their file (save_file, os.link)
    try:
        yield tmp
        _as_umask_allows(tmp, 0o666)
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temp folder that becomes `out` only if the block finishes without error."""
    out = Path(out)
    require_absent(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _as_umask_allows(tmp, 0o777)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
