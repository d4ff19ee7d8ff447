"""Where hypernetworks live: the store (by name), the shipped ones, and which fits a base model."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..sources import cache_root
from .model import CONFIG, Fingerprint, read_meta

# Hypernetworks that ship with tokengraft (one per bundled model), found after the store.
SHIPPED = Path(__file__).parent.parent / "shipped"


def store() -> Path:
    """Where hypernetworks are found by name: `$TOKENGRAFT_HYPERNETS`, else under the cache."""
    return Path(os.environ.get("TOKENGRAFT_HYPERNETS") or cache_root() / "hypernets")


def default_roots() -> list[Path]:
    return [store(), SHIPPED]


def named_hypernet(name: str, roots: list[Path]) -> Path | None:
    """The first folder `root/name` that holds a hypernetwork, by name only (never a path)."""
    return next((root / name for root in roots if (root / name / CONFIG).is_file()), None)


def resolve_hypernet(name: str | Path, roots: list[Path] | None = None) -> Path:
    """A hypernetwork folder, given as a path or as a name in the store or the shipped ones."""
    roots = default_roots() if roots is None else roots
    if (Path(name) / CONFIG).is_file():
        return Path(name)
    found = named_hypernet(str(name), roots)
    if found is not None:
        return found
    where = ", ".join(map(str, roots))
    raise InputError(f"no hypernetwork {str(name)!r}: not a folder with {CONFIG}, nor in {where}")


def list_hypernets(roots: list[Path] | None = None) -> list[Path]:
    """Hypernetwork folders directly inside the given folders; a name in an earlier folder
    hides the same name in a later one (the store's own over a shipped one)."""
    found: dict[str, Path] = {}
    for root in default_roots() if roots is None else roots:
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if (p / CONFIG).is_file():
                    found.setdefault(p.name, p)
    return list(found.values())


def find_hypernet(fingerprint: Fingerprint, roots: list[Path] | None = None) -> Path | None:
    """The most trained hypernetwork made for exactly this base model (same embeddings)."""
    matches = []
    for folder in list_hypernets(roots):
        try:
            meta = read_meta(folder)
        except InputError:
            continue  # a broken folder is never chosen
        if meta.fingerprint == fingerprint:
            matches.append((meta.recipe.get("tokens_seen") or 0, folder))
    return max(matches, key=lambda m: m[0])[1] if matches else None
