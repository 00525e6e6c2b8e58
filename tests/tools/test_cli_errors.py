"""Bad input through the installed `bai-report` / `bai-probe` / `bai-demo` commands: one error
line, no traceback, non-zero exit, inputs untouched, nothing written (bai-probe: before vLLM
starts)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GOOD_ROWS = [{"step": s, "bai/response_length/mean": 1000.0 + s, "bai/reward/mean": 0.5}
             for s in range(1, 11)]


def make_inputs(root: Path) -> None:
    """Every input file the cases use, under root/in."""
    d = root / "in"
    (d / "model").mkdir(parents=True)
    (d / "model" / "config.json").write_text("{}", encoding="utf-8")
    (d / "no-config").mkdir()
    (d / "empty-dir").mkdir()
    (d / "out-dir").mkdir()
    (d / "a-file").write_text("not a folder\n", encoding="utf-8")
    (d / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS),
                                  encoding="utf-8")
    (d / "empty.jsonl").write_text("", encoding="utf-8")
    (d / "latin1.jsonl").write_bytes(b'{"step": 1, "x": 1}\n{"step": 2, "r\xe9": 1}\n')
    (d / "fig.png").write_bytes(PNG_MAGIC + b"\x00\x00\x00\rIHDR")
    (d / "broken.jsonl").write_text('{"step": 1, "x": 1}\n{"step": 2,\n{"step": 3}\n',
                                    encoding="utf-8")
    (d / "nostep.jsonl").write_text('{"step": 1, "x": 1}\n{"x": 2}\n', encoding="utf-8")
    (d / "prompts-latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    (d / "prompts-broken.jsonl").write_text('{"prompt": "a"}\n{oops}\n', encoding="utf-8")


GOOD = "in/good.jsonl"
# (command, argv relative to the test folder, text the last stderr line must contain)
CASES = [
    ("bai-report", [GOOD, "--collapse-drop", "1.5"], "--collapse-drop must be in (0, 1), got 1.5"),
    ("bai-report", [GOOD, "--collapse-drop", "nan"],
     "--collapse-drop must be a finite number, got nan"),
    ("bai-report", [GOOD, "--collapse-recover", "-0.2"],
     "--collapse-recover must be in (0, 1], got -0.2"),
    ("bai-report", [GOOD, "--collapse-drop", "0.2", "--collapse-recover", "0.7"],
     "--collapse-recover must be >= 1 - --collapse-drop = 0.8"),
    ("bai-report", [GOOD, "--collapse-max-onset-step", "-1"],
     "--collapse-max-onset-step must be >= 0 (0 = any step), got -1"),
    ("bai-report", [GOOD, "--baseline-steps", "0"], "--baseline-steps must be >= 1, got 0"),
    ("bai-report", [GOOD, "--ema", "0"], "--ema must be in (0, 1]"),
    # an old spelling (a hidden alias for one release) is named as typed
    ("bai-report", [GOOD, "--hockey-ema", "inf"], "--hockey-ema must be a finite number, got inf"),
    ("bai-report", [GOOD, "--reward-dip-std", "-1"], "--reward-dip-std must be >= 0, got -1.0"),
    ("bai-report", [GOOD, "--reward-dip-rel", "NaN"], "--reward-dip-rel must be a finite"),
    ("bai-report", [GOOD, "--reward-dip-abs=-inf"], "--reward-dip-abs must be a finite"),
    ("bai-report", [GOOD, "--baseline-steps", "2.5"], "invalid int value: '2.5'"),
    ("bai-report", [GOOD, "--collapse-drop", "half"], "invalid float value: 'half'"),
    ("bai-report", [GOOD, "--png", "in/report.txt"], "must end in .png, got '.txt'"),
    ("bai-report", [GOOD, "--png", "in/out-dir"], "in/out-dir: is a directory"),
    ("bai-report", [GOOD, "--png", "in/a-file/sub/r.png"], "in/a-file is not a directory"),
    ("bai-report", ["in/missing.jsonl"], "in/missing.jsonl: no such file or directory"),
    ("bai-report", ["in/latin1.jsonl"], "in/latin1.jsonl:2: not UTF-8 text (invalid byte 0xe9"),
    ("bai-report", ["in/fig.png"], "in/fig.png:1: not UTF-8 text (invalid byte 0x89"),
    ("bai-report", ["in/empty.jsonl"], "in/empty.jsonl: no metrics logged"),
    ("bai-report", ["in/broken.jsonl"], "in/broken.jsonl:2: invalid JSON"),
    ("bai-report", ["in/nostep.jsonl"], "in/nostep.jsonl:2: missing or non-integer 'step'"),
    ("bai-report", ["in/empty-dir"], "in/empty-dir: neither bai_metrics.jsonl nor TensorBoard"),
    ("bai-report", [f"label={GOOD}", "in/missing"], "in/missing: no such file or directory"),
    ("bai-probe", ["in/nowhere"], "model directory not found: in/nowhere"),
    ("bai-probe", ["in/no-config"], "not a model directory (no config.json): in/no-config"),
    ("bai-probe", ["in/model", "-n", "0"], "--n-samples must be >= 1, got 0"),
    ("bai-probe", ["in/model", "-n", "two"], "invalid int value: 'two'"),
    ("bai-probe", ["in/model", "--max-tokens", "-5"], "--max-tokens must be >= 1, got -5"),
    ("bai-probe", ["in/model", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    ("bai-probe", ["in/model", "--temperature", "nan"], "--temperature must be a finite number"),
    ("bai-probe", ["in/model", "--bucket-width", "0"], "--bucket-width must be >= 1, got 0"),
    ("bai-probe", ["in/model", "--prompts", "in/none.jsonl"],
     "in/none.jsonl: prompt file not found"),
    ("bai-probe", ["in/model", "--prompts", "in/prompts-latin1.jsonl"],
     "in/prompts-latin1.jsonl:1: not UTF-8 text (invalid byte 0xe9"),
    ("bai-probe", ["in/model", "--prompts", "in/prompts-broken.jsonl"],
     "in/prompts-broken.jsonl:2: invalid JSON"),
    ("bai-probe", ["in/model", "--png", "in/probe.jpg"], "must end in .png, got '.jpg'"),
    ("bai-probe", ["in/model", "--json", "in/out-dir"], "in/out-dir: is a directory"),
    ("bai-probe", ["in/model", "--json", "in/a-file/p.json"], "in/a-file is not a directory"),
    ("bai-demo", ["--out", "out", "--recipe", "in/none.yaml"], "--recipe in/none.yaml: no such"),
    ("bai-demo", ["--family", "qwen"], "argument --family: invalid choice: 'qwen'"),
]


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file (and folder) under root."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                   if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def run_cli(tool: str, argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    exe = BIN / tool
    if not exe.exists():
        pytest.skip(f"{exe} is not installed")
    environ = {k: v for k, v in os.environ.items() if k != "BAI_TRACEBACK"}
    return subprocess.run([str(exe), *argv], cwd=cwd, capture_output=True, text=True,
                          env={**environ, **env}, timeout=180)


@pytest.mark.parametrize(("tool", "argv", "needle"), CASES,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(CASES)])
def test_bad_input_fails_with_one_line(tmp_path, tool, argv, needle):
    make_inputs(tmp_path)
    before = tree_digest(tmp_path)
    proc = run_cli(tool, argv, tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith(f"{tool}: error: "), proc.stderr[-2000:]
    assert needle in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert tree_digest(tmp_path) == before  # inputs unchanged, nothing written


def test_case_table_is_large_enough():
    assert len(CASES) >= 20
    assert sum(tool == "bai-probe" for tool, _, _ in CASES) >= 10


def test_valid_input_still_works(tmp_path):
    make_inputs(tmp_path)
    proc = run_cli("bai-report", ["--json", "-", GOOD, "--png", "out/fig.png"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"][0]["steps"] == 10
    assert (tmp_path / "out" / "fig.png").read_bytes()[:8] == PNG_MAGIC


def test_traceback_only_on_request(tmp_path, monkeypatch, capsys):
    """An unexpected failure: one line by default; the traceback with BAI_TRACEBACK=1 / -v."""
    from bai_tools import report

    make_inputs(tmp_path)

    def broken(*_args, **_kwargs):
        raise RuntimeError("deliberate\nbug")

    monkeypatch.setattr(report, "replay", broken)
    monkeypatch.delenv("BAI_TRACEBACK", raising=False)
    argv = [str(tmp_path / GOOD)]
    for extra, env, shown in (([], "", False), ([], "1", True), (["-v"], "0", True)):
        monkeypatch.setenv("BAI_TRACEBACK", env)
        capsys.readouterr()
        assert report.main(argv + extra) == 1
        err = capsys.readouterr().err
        message = err.strip().splitlines()[-1]
        assert message.startswith("bai-report: error: RuntimeError: deliberate bug")
        assert ("Traceback" in err) is shown
