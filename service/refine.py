"""A request's `refine` block as the library sees it: a RefineConfig and text paths.

The API validates with the same functions the worker builds the job with, so a request that
passes validation is the request that runs. Errors name texts as the user named them: the
library's messages carry the server's paths, which users must never see.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hypernet.errors import InputError
from hypernet.refine import RefineConfig
from hypernet.texts import read_texts, require_window

from .catalog import Catalog


def config(spec: Mapping) -> RefineConfig:
    """The budget the user gave; with neither minutes nor steps the library's default budget
    applies, and steps alone run without a time limit (as the CLI does)."""
    return RefineConfig.budget(spec.get("minutes"), spec.get("steps"), spec.get("rows") or "new")


def paths(catalog: Catalog, spec: Mapping) -> list[Path]:
    """Every text resolved exactly as an eval text is: an upload id or a corpus name."""
    return [catalog.text(name, "refine text") for name in spec["texts"]]


def check(catalog: Catalog, spec: Mapping) -> None:
    """Everything the library would refuse at the start of the job, refused now: the budget,
    unknown or unreadable texts, and text too short to fill one training window."""
    cfg = config(spec)
    cfg.check()
    names = list(spec["texts"])
    texts = [_read(name, path) for name, path in zip(names, paths(catalog, spec), strict=True)]
    require_window(texts, cfg.window_chars)


def _read(name: str, path: Path) -> str:
    try:
        return read_texts([path])[0]
    except InputError as e:
        raise InputError(str(e).replace(str(path), repr(name))) from None
