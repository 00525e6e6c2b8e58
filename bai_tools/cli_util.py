"""What the bai tools share beyond bai_core.cli: output paths checked up front and written
with one-line errors, and UTF-8 text files read line by line with file:line errors."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from bai_core.cli import BaiError, UsageError

__all__ = ["check_out_path", "iter_text_lines", "writing"]


def check_out_path(path: Path | None, flag: str, suffixes: Sequence[str] = ()) -> None:
    """Refuse an output path before any work (UsageError): a wrong suffix when `suffixes` is
    given, an existing directory, a parent that is a file. Missing parent folders are fine."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: must end in {' or '.join(suffixes)}, got "
                         f"{path.suffix or 'no suffix'!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is not a directory")
            break


@contextlib.contextmanager
def writing(flag: str, path: Path) -> Iterator[Path]:
    """Write `path` inside (its folder made first); an OSError becomes one line naming the
    option, then `wrote PATH` goes to stderr."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as exc:
        raise BaiError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {path}", file=sys.stderr)


def iter_text_lines(path: Path, error: type[Exception]) -> Iterator[tuple[str, str]]:
    """(`FILE:LINE`, text) of each non-blank line of a UTF-8 file; `error` names the file and
    line for an unreadable file or bytes that are not UTF-8."""
    try:
        handle = Path(path).open("rb")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, raw_line in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise error(
                    f"{where}: not UTF-8 text (invalid byte 0x{raw_line[exc.start]:02x} at byte "
                    f"{exc.start + 1} of the line)"
                ) from None
            if line.strip():
                yield where, line
