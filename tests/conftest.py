"""Shared pytest fixtures. Add new shared fixtures below, one per block, each with a docstring."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


# --- real-model cache ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def repo_cache() -> Iterator[Path]:
    """TOKENGRAFT_CACHE under the repo's git-ignored .cache/, so the real SmolLM2 checkpoint is
    converted from the bundled GGUF once and reused by later test runs."""
    root = REPO / ".cache" / "tokengraft"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKENGRAFT_CACHE", str(root))
        yield root
