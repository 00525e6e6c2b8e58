"""The one CLI convention of every bai tool: argparse, typed errors, `prog: error: ...` lines.

Library code raises `BaiError` (or a subclass, or ValueError/OSError for bad input); only a
tool's `main()` turns errors into exits, through `run_main`: usage errors exit 2, failures 1,
one line `prog: error: message` on stderr, the traceback first with -v or BAI_TRACEBACK=1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bai_core.constants import TRACEBACK_ENV

__all__ = ["BaiError", "UsageError", "add_verbose", "check_out_path", "deprecated_alias",
           "iter_text_lines", "one_line", "quiet_dependency_warnings", "run_main",
           "tool_main", "traceback_wanted", "writing"]

EXIT_FAILURE, EXIT_USAGE = 1, 2
SPELLED = "_bai_spelled"  # namespace attribute: dest -> the deprecated spelling used
MAX_MESSAGE = 600


class BaiError(Exception):
    """A failure a tool reports in one line; `exit_code` 1 unless said otherwise."""

    def __init__(self, message: object, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


class UsageError(BaiError):
    """A bad command line (an option's value, a missing file argument): exit status 2."""

    def __init__(self, message: object) -> None:
        super().__init__(message, EXIT_USAGE)


def one_line(prog: str, message: object) -> str:
    """`prog: error: message` on one line, bounded in length."""
    text = " ".join(str(message).split()) or "(no message)"
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return f"{prog}: error: {text}"


def traceback_wanted(verbose: bool = False) -> bool:
    """-v/--verbose or BAI_TRACEBACK=1 (any value but "" and "0") shows tracebacks."""
    return verbose or os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """The shared -v/--verbose flag: more logging, and tracebacks of failures."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help=f"log more; print the traceback of a failure (or {TRACEBACK_ENV}=1)")


class _Deprecated(argparse.Action):
    def __init__(self, *args, new: str = "", **kwargs) -> None:
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated and goes in the next "
              f"release; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)
        spelled = dict(getattr(namespace, SPELLED, None) or {})
        spelled[self.dest] = option_string
        setattr(namespace, SPELLED, spelled)  # errors name the flag the user typed


def deprecated_alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str,
                     new: str, dest: str, **kwargs) -> None:
    """A hidden old spelling of option `new` for one release: works, and warns on use."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                        **kwargs)


def quiet_dependency_warnings() -> None:
    """Hide torch's start-up warning about the deprecated `pynvml` package (openrlhf needs it on a
    GPU install; our CPU lock has nvidia-ml-py instead): users should see our output, not noise."""
    warnings.filterwarnings("ignore", message=r".*pynvml package is deprecated.*",
                            category=FutureWarning)


def run_main(prog: str, fn: Callable[[], int | None], verbose: bool = False,
             expected: Sequence[type[BaseException]] = (BaiError, ValueError, OSError)) -> int:
    """Call `fn()` and return its exit status; any failure becomes one line and a status.

    `expected` errors print their message; others their type too, and how to see the
    traceback. KeyboardInterrupt is a failure ("interrupted", status 130).
    """
    show = traceback_wanted(verbose)
    try:
        return int(fn() or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(one_line(prog, "interrupted"), file=sys.stderr)
        return 130
    except (Exception, *expected) as exc:  # noqa: BLE001 - any failure (vLLM's too): one line
        if show:
            traceback.print_exc()
        if isinstance(exc, tuple(expected)):
            print(one_line(prog, exc), file=sys.stderr)
            return getattr(exc, "exit_code", EXIT_FAILURE)
        hint = "" if show else f" (-v or {TRACEBACK_ENV}=1 shows the traceback)"
        print(one_line(prog, f"{type(exc).__name__}: {exc}{hint}"), file=sys.stderr)
        return EXIT_FAILURE


def tool_main(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace],
              int | None], argv: Sequence[str] | None = None, *, vllm: bool = False,
              log_format: str = logging.BASIC_FORMAT) -> int:
    """A tool's `main()`: parse, log at INFO with -v (WARNING without; vLLM's too with `vllm`),
    then `run(args)` through run_main."""
    quiet_dependency_warnings()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=log_format)
    if vllm and not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # read when vllm is imported
    return run_main(prog, lambda: run(args), args.verbose)


def check_out_path(path: Path | None, flag: str, suffixes: Sequence[str] = ()) -> None:
    """Refuse an output path before any work (UsageError): a wrong suffix, an existing
    directory, a parent that is a file. Missing parent folders are fine."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: must end in {' or '.join(suffixes)}, got "
                         f"{path.suffix or 'no suffix'!r}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is not a directory")


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
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path}:{number}: not UTF-8 text (invalid byte 0x"
                            f"{raw[exc.start]:02x} at byte {exc.start + 1} of the line)") from None
            if line.strip():
                yield f"{path}:{number}", line
