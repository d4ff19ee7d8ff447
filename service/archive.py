"""Tar archives (plain, gzip, bzip2 or xz) read as one stream and bounded by what they unpack
to: every decompressed byte counts, headers and skipped members included, and reading stops
at the bound, so a small archive cannot make the server inflate gigabytes or walk through
hundreds of thousands of members. Only wanted files are read; a member whose path tries to
leave the archive (absolute, `..`, a link) refuses the whole archive.

Refusals are `ArchiveError`s; the caller decides what they answer.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zlib
from pathlib import PurePosixPath
from typing import BinaryIO

MAX_MEMBERS = 64  # a tokenizer folder has about four files
DECOMPRESSORS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
UNREADABLE = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


class ArchiveError(Exception):
    """An archive refused: over a bound (`too_large`), or unreadable or unsafe."""

    def __init__(self, detail: str, too_large: bool = False) -> None:
        super().__init__(detail)
        self.too_large = too_large


def too_large(limit: int) -> ArchiveError:
    return ArchiveError(f"the archive unpacks to more than {limit} bytes", too_large=True)


class Bounded:
    """A read-only stream that yields at most `limit` bytes of `stream` in all (asking it for no
    more than that, so a decompressor never inflates past the bound) and refuses the rest."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.limit, self.seen = stream, limit, 0

    def read(self, size: int | None = -1) -> bytes:
        left = self.limit - self.seen + 1
        chunk = self.stream.read(left if size is None or size < 0 else min(size, left))
        self.seen += len(chunk)
        if self.seen > self.limit:
            raise too_large(self.limit)
        return chunk


def decompressed(stream: BinaryIO) -> BinaryIO:
    """The stream itself, or its decompressing reader when it starts with a known magic."""
    head = stream.read(6)
    stream.seek(0)
    for magic, opener in DECOMPRESSORS.items():
        if head.startswith(magic):
            return opener(stream, "rb")  # type: ignore[return-value]
    return stream


def check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or member.islnk() or member.issym():
        raise ArchiveError(f"tar member {member.name[:200]!r} points outside the archive")


def read_members(
    stream: BinaryIO, wanted: set[str], limit: int, max_members: int = MAX_MEMBERS
) -> dict[str, bytes]:
    """{file name: bytes} of the regular members whose base name is wanted (each at most
    once), from a seekable binary stream holding a tar, compressed or not."""
    try:
        return _read(Bounded(decompressed(stream), limit), wanted, max_members)
    except UNREADABLE as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ArchiveError(f"not a readable tar: {first[:300]}") from None


def _read(stream: Bounded, wanted: set[str], max_members: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
        for count, member in enumerate(archive, 1):
            if count > max_members:
                raise ArchiveError(f"the archive has more than {max_members} members", True)
            check_member(member)
            if stream.seen + member.size > stream.limit:
                raise too_large(stream.limit)
            name = PurePosixPath(member.name).name
            if member.isfile() and name in wanted:
                files[_new(files, name)] = _content(archive, member)
    return files


def _new(files: dict[str, bytes], name: str) -> str:
    if name in files:
        raise ArchiveError(f"the archive holds two {name} files")
    return name


def _content(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = archive.extractfile(member)
    assert extracted is not None  # a regular file always has content
    return extracted.read()
