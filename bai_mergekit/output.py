"""Output directories: never over the user's data, complete or absent, and marked as ours."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from bai_mergekit.errors import BaiMergeError, interrupted, pending_signal, signals_deferred

LOG = logging.getLogger(__name__)
PARTIAL_MARK = ".partial-"
OLD_MARK = ".old-"
# Written last into every output of a bai merge: the file names and sizes the merge wrote.
# An existing output is replaced only when its content still matches this list exactly.
MARKER = ".bai-merge.json"
OWNER = ".bai-owner.json"  # inside a partial dir while it is being written: pid and host
NO_SPACE = os.strerror(errno.ENOSPC)


def real(path: str | os.PathLike) -> Path:
    """Absolute path with every existing component's symlinks resolved."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_location(out: str | os.PathLike, protected: Iterable[tuple[str, str]]) -> Path:
    """Refuse an output that is, contains or lies inside an input (or config file, cwd).

    `protected` holds (what, path) pairs: input models as (`input model NAME`, folder),
    the config file, the current folder. The current folder and files may contain the
    output (`./out`), but the output may not be or contain them.
    """
    target = real(out)
    cwd = real(os.getcwd())
    if _inside(cwd, target):
        what = "is" if cwd == target else "contains"
        raise BaiMergeError(f"output path {out} {what} the current folder {cwd}; refusing to "
                            "write there (choose a new folder)")
    for what, path in protected:
        source = real(path)
        if _inside(source, target):
            how = "is" if source == target else "contains"
            raise BaiMergeError(f"output path {out} {how} the {what} ({source})")
        if source.is_dir() and _inside(target, source):
            raise BaiMergeError(f"output path {out} lies inside the {what} ({source})")
    return target


def _listing(folder: Path) -> dict[str, int]:
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel in (MARKER, OWNER):
            continue
        files[rel + ("/" if path.is_dir() else "")] = 0 if path.is_dir() else path.stat().st_size
    return files


def write_marker(folder: Path, tool: str) -> None:
    """Record what the merge wrote (names and sizes), so a later merge may replace it."""
    (folder / OWNER).unlink(missing_ok=True)
    marker = {"tool": tool, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "files": _listing(folder)}
    (folder / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def _describe(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{len(names)} entries: {shown}"


def check_replaceable(out: Path) -> bool:
    """True if `out` exists and may be replaced; False if it is absent; refuse otherwise.

    Replaceable: an empty folder, or a folder whose content is still exactly what an
    earlier bai merge wrote (its MARKER lists every file and size; nothing added or changed).
    """
    if not out.exists() and not out.is_symlink():
        return False
    if out.is_symlink() or not out.is_dir():
        kind = "a symlink" if out.is_symlink() else "a file"
        raise BaiMergeError(f"output path {out} exists and is {kind}; refusing to replace it")
    if not any(out.iterdir()):
        return True
    marker = out / MARKER
    if not marker.is_file():
        raise BaiMergeError(
            f"output path {out} exists and was not written by a bai merge (no {MARKER}; "
            f"{_describe(out)}); refusing to replace it: choose a new path or remove it"
        )
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BaiMergeError(f"output path {out} has an unreadable {MARKER}; refusing to "
                            "replace it") from None
    now = _listing(out)
    changed = sorted(set(now) ^ set(recorded)) + sorted(
        k for k in set(now) & set(recorded) if now[k] != recorded[k]
    )
    if changed:
        raise BaiMergeError(
            f"output path {out} was written by a bai merge but has changed since "
            f"({', '.join(changed[:5])}); refusing to replace it"
        )
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove `.NAME.partial-*` dirs a killed merge left beside `out` (and report live ones).

    A partial dir records its writer's pid and host; one whose writer is gone is removed,
    one of a live writer makes this merge refuse, one from another host is only reported.
    An `.NAME.old-*` dir (killed while swapping) is put back when `out` is missing.
    """
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in sorted(out.parent.glob(f".{out.name}{PARTIAL_MARK}*")):
        if not path.is_dir():
            continue
        try:
            owner = json.loads((path / OWNER).read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, socket.gethostname()
        if host != socket.gethostname():
            LOG.warning("left as is: %s (a partial merge output from host %s)", path, host)
            continue
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            raise BaiMergeError(f"another merge (pid {pid}) is writing {out} right now "
                                f"(into {path.name}); wait for it or stop it")
        if pid == os.getpid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        LOG.warning("removed %s, left by an interrupted merge", path)
        removed.append(path)
    for path in sorted(out.parent.glob(f".{out.name}{OLD_MARK}*")):
        if path.is_dir() and not out.exists() and (path / MARKER).is_file():
            path.rename(out)
            LOG.warning("restored %s from %s (a merge was killed while replacing it)", out, path)
        elif path.is_dir() and (path / MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
            LOG.warning("removed %s, an earlier output a killed merge was replacing", path)
            removed.append(path)
    return removed


def _no_space(error: BaseException) -> bool:
    return getattr(error, "errno", None) == errno.ENOSPC or NO_SPACE in str(error)


def prepare_output(out_path: str | os.PathLike) -> Path:
    """Clean stale partials of `out` and check it may be written; returns its absolute path."""
    out = Path(out_path).absolute()
    clean_stale(out)
    check_replaceable(out)
    return out


def _raise_if_signalled() -> None:
    if pending_signal() is not None:
        raise interrupted(pending_signal())


def _make_partial(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_MARK}", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    owner = {"pid": os.getpid(), "host": socket.gethostname()}
    (tmp / OWNER).write_text(json.dumps(owner), encoding="utf-8")
    return tmp


@contextlib.contextmanager
def atomic_directory(out_path: str | os.PathLike, tool: str = "mergekit-yaml") -> Iterator[Path]:
    """Yield a hidden temp dir beside `out_path`; rename it into place only on success.

    On any error (signals turned into exceptions included) the temp dir is removed; an
    existing `out_path` is replaced only if check_replaceable allows it, after the new
    output is complete, and the new output gets a MARKER listing what was written.
    """
    out = prepare_output(out_path)
    tmp: Path | None = None
    try:
        with signals_deferred():  # the temp dir and `tmp` come into being together
            try:
                tmp = _make_partial(out)
            except OSError as error:
                raise BaiMergeError(
                    f"cannot create output directory next to {out}: {error}") from None
        _raise_if_signalled()
        yield tmp
        _raise_if_signalled()  # a library may have swallowed the exception: do not publish
        write_marker(tmp, tool)
        with signals_deferred():  # never stop between moving the old output away and the new in
            _replace(tmp, out)
    except BaseException as error:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, Exception) and _no_space(error):
            raise BaiMergeError(
                f"disk full while writing {out}; nothing was written, free space and retry"
            ) from None
        raise


def _replace(tmp: Path, out: Path) -> None:
    if not check_replaceable(out):
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD_MARK}", dir=out.parent))
    old.rmdir()
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    LOG.info("replaced an earlier bai merge output at %s", out)
