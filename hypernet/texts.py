"""The texts a run reads: eval text cut to a byte budget, and the refine texts.

Read and checked while the request is resolved, so a missing or non-UTF-8 file fails before
any model is opened.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

PROBE_BYTES = 64  # enough of a text to know whether any cut of it keeps a character


def read_texts(paths: list[Path]) -> list[str]:
    if not paths:
        raise InputError("refine needs at least one text file")
    out = []
    for path in paths:
        try:
            out.append(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise InputError(f"cannot read refine text {path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise InputError(f"refine text {path} is not UTF-8 (byte {e.start})") from None
    return out


def read_eval_text(path: Path, max_bytes: int | None) -> str:
    """UTF-8 text cut to at most `max_bytes`: at the last line break that fits when that keeps
    at least half of them, else at the last whole character."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"cannot read eval text {path}: {e.strerror or e}") from e
    if max_bytes is not None and len(data) > max_bytes:
        cut = max_bytes
        while cut > 0 and data[cut] & 0xC0 == 0x80:  # never split a multi-byte character
            cut -= 1
        line_end = data.rfind(b"\n", 0, cut)
        data = data[: line_end + 1 if line_end >= max_bytes // 2 else cut]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"eval text {path} is not UTF-8 (byte {e.start})") from e


def has_eval_text(path: Path, max_bytes: int | None) -> bool:
    """Whether `read_eval_text(path, max_bytes)` keeps any text, from its first 64 bytes at
    most: past 4 bytes a cut always keeps a whole character, so a longer budget keeps text
    exactly when 64 bytes do (a request is checked with this before it becomes a job)."""
    return bool(read_eval_text(path, min(max_bytes or PROBE_BYTES, PROBE_BYTES)))


def cut_windows(texts: list[str], size: int) -> list[str]:
    """Consecutive windows of about `size` characters, cut after a line break (else a space)
    where one falls in the second half, so that windows start at the start of a word."""
    out = []
    for text in texts:
        start = 0
        while len(text) - start >= size:
            end = start + size
            cut = max(text.rfind("\n", start + size // 2, end), text.rfind(" ", end - 32, end))
            end = cut + 1 if cut > start else end
            out.append(text[start:end])
            start = end
    return out


def require_window(texts: list[str], window_chars: int) -> None:
    """Refuse, before any work, text that does not fill one training window."""
    if not cut_windows(texts, window_chars):
        raise InputError(f"the refine text is shorter than one window ({window_chars} characters)")
