"""Output directories that appear only when complete, and what BAI adds to them."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bai_mergekit.errors import BaiMergeError

LOG = logging.getLogger(__name__)
PARTIAL_MARK = ".partial-"


@contextlib.contextmanager
def atomic_directory(out_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temp dir beside `out_path`; rename it into place only on success.

    On any error the temp dir is removed, so no half-written output looks complete; a
    previous `out_path` is replaced only after the new one is fully written.
    """
    out = Path(out_path).absolute()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_MARK}", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as error:
        raise BaiMergeError(f"cannot create output directory next to {out}: {error}") from None
    try:
        yield tmp
        _replace(tmp, out)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.errno == errno.ENOSPC:
            raise BaiMergeError(f"disk full while writing {out}; nothing was written") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    if not out.is_dir():
        raise BaiMergeError(f"output path exists and is not a directory: {out}")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    LOG.info("replaced existing %s", out)
