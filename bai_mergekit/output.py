"""Output folders: never over the user's data, complete or absent (signals included), finished
the same way by mergekit-yaml and bai-sweep (config, tokenizer, card, marker)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bai_core.merge_math import BaiMergeError

if TYPE_CHECKING:
    from bai_mergekit.preflight import MergePlan

LOG = logging.getLogger(__name__)
PARTIAL_MARK, OLD_MARK = ".partial-", ".old-"
# Written last into every output of a bai merge: the file names and sizes the merge wrote.
# An existing output is replaced only when its content still matches this list exactly.
MARKER = ".bai-merge.json"
OWNER = ".bai-owner.json"  # inside a partial dir while it is being written: pid and host
PAPER_URL = "https://arxiv.org/abs/2509.00309"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "chat_template.jinja", "chat_template.json")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
RECEIVED: list[int] = []  # signals caught by merge_signals in this process
_DEFER = [0]  # > 0 while a section that must not be cut short runs


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Inside, a caught signal is only recorded in RECEIVED; the caller checks after."""
    _DEFER[0] += 1
    try:
        yield
    finally:
        _DEFER[0] -= 1


def _raise_if_signalled() -> None:
    """SIGTERM/SIGINT during a merge: cleaned up like any failure, exit 128 + signal."""
    if RECEIVED:
        name = signal.Signals(RECEIVED[0]).name
        raise BaiMergeError(f"interrupted by {name}; partial output removed", 128 + RECEIVED[0])


@contextlib.contextmanager
def merge_signals() -> Iterator[None]:
    """SIGTERM/SIGINT inside become an interrupted error (so cleanup runs), even when library
    code on the way up wraps the exception in its own (transformers does) or swallows it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not break the cleanup
        RECEIVED.append(signum)
        if not _DEFER[0]:
            _raise_if_signalled()

    RECEIVED.clear()
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    except (Exception, KeyboardInterrupt):
        _raise_if_signalled()
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    _raise_if_signalled()


def real(path: str | os.PathLike) -> Path:
    """Absolute path with every existing component's symlinks resolved."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_location(out: str | os.PathLike, protected: Iterable[tuple[str, str]]) -> Path:
    """Refuse an output that is, contains or lies inside a `protected` (what, path): input
    models, the config file; it may contain the current folder's files but not the folder."""
    target = real(out)
    cwd = real(os.getcwd())
    if _inside(cwd, target):
        raise BaiMergeError(f"output path {out} {'is' if cwd == target else 'contains'} the "
                            f"current folder {cwd}; refusing to write there (choose a new folder)")
    for what, path in protected:
        source = real(path)
        if _inside(source, target):
            how = "is" if source == target else "contains"
            raise BaiMergeError(f"output path {out} {how} the {what} ({source})")
        if source.is_dir() and _inside(target, source):
            raise BaiMergeError(f"output path {out} lies inside the {what} ({source})")
    return target


def _listing(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix() + ("/" if p.is_dir() else ""):
            0 if p.is_dir() else p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.relative_to(folder).as_posix()
            not in (MARKER, OWNER)}


def write_marker(folder: Path, tool: str) -> None:
    """Record what the merge wrote (names and sizes), so a later merge may replace it."""
    (folder / OWNER).unlink(missing_ok=True)
    marker = {"tool": tool, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "files": _listing(folder)}
    (folder / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def check_replaceable(out: Path) -> bool:
    """True if `out` may be replaced (an empty folder, or one whose content is still exactly
    what its MARKER lists), False if it is absent; refuse otherwise."""
    if not out.exists() and not out.is_symlink():
        return False
    if out.is_symlink() or not out.is_dir():
        kind = "a symlink" if out.is_symlink() else "a file"
        raise BaiMergeError(f"output path {out} exists and is {kind}; refusing to replace it")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return True
    if not (out / MARKER).is_file():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise BaiMergeError(
            f"output path {out} exists and was not written by a bai merge (no {MARKER}; "
            f"{len(names)} entries: {shown}); refusing to replace it: choose a new path or "
            "remove it")
    try:
        recorded = json.loads((out / MARKER).read_text(encoding="utf-8"))["files"]
        now = _listing(out)
        changed = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise BaiMergeError(f"output path {out} has an unreadable {MARKER}; refusing to "
                            "replace it") from None
    if changed:
        raise BaiMergeError(f"output path {out} was written by a bai merge but has changed "
                            f"since ({', '.join(changed[:5])}); refusing to replace it")
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def clean_stale(out: Path) -> None:
    """Remove `.NAME.partial-*` dirs a killed merge of this host left beside `out` (refuse
    while their writer lives, only report other hosts'); put back an `.NAME.old-*` dir
    (killed while swapping) when `out` is missing, else remove it."""
    if not out.parent.is_dir():
        return
    here = socket.gethostname()
    for path in sorted(out.parent.glob(f".{out.name}{PARTIAL_MARK}*")):
        if not path.is_dir():
            continue
        try:
            owner = json.loads((path / OWNER).read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, here
        if host != here:
            LOG.warning("left as is: %s (a partial merge output from host %s)", path, host)
        elif pid == os.getpid():
            continue
        elif pid is not None and _pid_alive(pid):
            raise BaiMergeError(f"another merge (pid {pid}) is writing {out} right now "
                                f"(into {path.name}); wait for it or stop it")
        else:
            shutil.rmtree(path, ignore_errors=True)
            LOG.warning("removed %s, left by an interrupted merge", path)
    for path in sorted(out.parent.glob(f".{out.name}{OLD_MARK}*")):
        if not (path.is_dir() and (path / MARKER).is_file()):
            continue
        if not out.exists():
            path.rename(out)
            LOG.warning("restored %s from %s (a merge was killed while replacing it)", out, path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            LOG.warning("removed %s, an earlier output a killed merge was replacing", path)


def prepare_output(out_path: str | os.PathLike) -> Path:
    """Clean stale partials of `out` and check it may be written; returns its absolute path."""
    out = Path(out_path).absolute()
    clean_stale(out)
    check_replaceable(out)
    return out


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
    """Yield a hidden temp dir beside `out_path`, renamed into place (with a MARKER) only on
    success, replacing an earlier output only if check_replaceable allows; removed on error."""
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
        if isinstance(error, Exception) and (getattr(error, "errno", None) == errno.ENOSPC
                                             or os.strerror(errno.ENOSPC) in str(error)):
            raise BaiMergeError(f"disk full while writing {out}; nothing was written, free "
                                "space and retry") from None
        raise


def _replace(tmp: Path, out: Path) -> None:
    if check_replaceable(out):
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD_MARK}", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
            LOG.info("replaced an earlier bai merge output at %s", out)
            return
        out.rmdir()
    tmp.rename(out)


def _copy_files(source: Path, out: Path, names: Iterable[str]) -> None:
    for name in names:
        (out / name).unlink(missing_ok=True)
        if (source / name).is_file():
            shutil.copy(source / name, out / name)


def card_section(plan: MergePlan) -> str:
    """The BAI section of the model card: method, paper, ratios, config and tokenizer source."""
    from bai_core.merge_math import coefficients

    recipe = plan.recipe
    lines = [
        "", "## Balanced Actor Initialization (BAI)", "",
        f"Merged with `merge_method: bai` ([arXiv 2509.00309]({PAPER_URL})):",
        "`M = alpha * M_base + (1 - alpha) * sum_i w_i M_i / sum_i w_i`, in one fp32 pass.", "",
        f"- base model (alpha = `base_weight` = {recipe.base_weight}): `{recipe.base}`",
        *(f"- `{name}`: weight {w}" for name, w in zip(recipe.models, recipe.weights)),
        f"- normalize: {recipe.normalize}",
    ]
    ratios = recipe.scalar_ratios()
    if ratios:
        c_base, c_models = coefficients(*ratios, recipe.normalize)
        lines.append("- effective coefficients (sum to 1 when normalized):")
        lines += [f"  - `{name}`: {coef:.6g}"
                  for name, coef in zip((recipe.base, *recipe.models), (c_base, *c_models))]
    else:
        lines.append("- ratios vary per layer (gradient or filter): see the config above")
    lines += [f"- config.json from `{plan.config_source}` ({plan.config_reason})",
              f"- tokenizer from `{plan.tokenizer}` ({plan.tokenizer_reason})" if plan.tokenizer
              else f"- tokenizer: {plan.tokenizer_reason}"]
    return "\n".join(lines) + "\n"


def finish_output(out: Path, final_name: str, plan: MergePlan, card: str | None = None,
                  cache_dir: str | None = None, copy_tokenizer: bool = True) -> None:
    """Finish the hidden output `out` (mergekit-yaml and bai-sweep alike): the config source's
    config.json (vocabulary size and dtype as merged) and generation_config.json, the tokenizer
    files of `plan.tokenizer` with `chat_template:` applied as mergekit does, and the model card
    (`card`, else mergekit's README.md, else a title) plus the BAI section."""
    def read(path: Path) -> dict:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))

    source = Path(plan.config_source.local_path(cache_dir=cache_dir))
    base, config = read(Path(plan.base.local_path(cache_dir=cache_dir))), read(source)
    # rows merged by id keep the inputs' (padded) vocabulary; else mergekit set the size
    produced = base if plan.tokenizer is not None else read(out)
    config["vocab_size"] = produced.get("vocab_size", config.get("vocab_size"))
    dtype = plan.recipe.dtype or base.get("dtype") or base.get("torch_dtype")
    for key in {"dtype", *(k for k in ("torch_dtype",) if k in config)} if dtype else ():
        config[key] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
    _copy_files(source, out, ["generation_config.json"])
    if copy_tokenizer and plan.tokenizer is not None:
        _copy_files(Path(plan.tokenizer.local_path(cache_dir=cache_dir)), out, TOKENIZER_FILES)
        if plan.recipe.raw.get("chat_template"):
            from mergekit.config import MergeConfiguration
            from mergekit.merge import _set_chat_template
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(out))
            _set_chat_template(tokenizer, MergeConfiguration.model_validate(plan.recipe.raw))
            tokenizer.save_pretrained(str(out))
        LOG.info("tokenizer from %s (%s)", plan.tokenizer, plan.tokenizer_reason)
    readme = out / "README.md"
    if card is None:
        card = readme.read_text(encoding="utf-8") if readme.is_file() else f"# {final_name}\n"
    readme.write_text(card.replace(out.name, final_name) + card_section(plan), encoding="utf-8")
