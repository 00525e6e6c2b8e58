"""bai-probe input handling: prompt files, model dirs and one-line errors (no engine start)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bai_tools import probe
from bai_tools.generation import (
    PromptFileError,
    SamplingSettings,
    default_prompts_path,
    load_prompts,
    think_open_at_end,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def model_dir(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}", encoding="utf-8")
    return path


def never_generate(*_args, **_kwargs):
    raise AssertionError("the engine must not start on bad input")


def test_default_prompts_ship_with_answers():
    prompts = load_prompts(default_prompts_path())
    assert len(prompts) == 16
    assert all(p.reference for p in prompts)
    assert all(len(p.messages) == 1 and p.messages[0]["role"] == "user" for p in prompts)


def test_prompt_forms_and_reference_fields(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "a", "answer": 3},
        {"prompt": "b", "label": "x"},
        {},  # replaced below by a blank line
        {"prompt": [{"role": "user", "content": "c"}]},
    ]
    lines = [json.dumps(r) for r in rows]
    lines[2] = "   "
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompts = load_prompts(path)
    assert [p.reference for p in prompts] == ["3", "x", None]
    assert prompts[2].messages == ({"role": "user", "content": "c"},)
    other = tmp_path / "q.jsonl"
    other.write_text(json.dumps({"question": "q?"}) + "\n", encoding="utf-8")
    assert load_prompts(other, input_key="question")[0].messages[0]["content"] == "q?"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "prompt file is empty"),
        ("\n\n", "prompt file is empty"),
        ('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n', ":3: invalid JSON"),
        ('{"prompt": "a"}\n["x"]\n', ":2: expected a JSON object"),
        ('{"question": "a"}\n', ":1: missing field 'prompt'"),
        ('{"prompt": ""}\n', ":1: field 'prompt' is empty"),
        ('{"prompt": [{"role": "user"}]}\n', ":1: field 'prompt' must be"),
    ],
)
def test_bad_prompt_files_fail_before_generation(tmp_path, model_dir, content, needle, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptFileError, match="bad.jsonl"):
        load_prompts(path)
    with pytest.raises(PromptFileError) as info:  # a typed error: main() makes it one line
        probe.run_probe([model_dir], path, SamplingSettings(), generate=never_generate)
    message = str(info.value)
    assert str(path) in message and needle in message and "\n" not in message
    assert probe.main([str(model_dir), "--prompts", str(path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"bai-probe: error: {message}"


def error_line(capsys, argv: list[str], status: int = 1) -> str:
    """Run bai-probe's main(); its exit status and the one error line it printed."""
    capsys.readouterr()
    assert probe.main(argv) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("bai-probe: error: ")
    return lines[-1]


def test_missing_model_and_missing_prompt_file(tmp_path, model_dir, capsys):
    assert re.search(r"model directory not found: .*nowhere",
                     error_line(capsys, [str(tmp_path / "nowhere")]))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    assert "no config.json" in error_line(capsys, [str(empty)])
    with pytest.raises(PromptFileError, match="prompt file not found"):
        probe.run_probe([model_dir], tmp_path / "none.jsonl", SamplingSettings(),
                        generate=never_generate)
    line = error_line(capsys, [str(model_dir), "--max-tokens", "0"], status=2)  # usage
    assert "--max-tokens must be >= 1" in line


def test_cli_exit_status_and_one_line_stderr(tmp_path, model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops}\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "bai_tools.probe", str(model_dir), "--prompts", str(bad)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bai-probe: error: ") and f"{bad}:2: invalid JSON" in last
    assert proc.stdout == ""


def test_candidate_names_and_think_open_detection():
    names = probe.candidate_names([Path("a/bai-actor"), Path("b/x"), Path("c/x")])
    assert names == ["bai-actor", "b/x", "c/x"]
    assert think_open_at_end("<|im_start|>assistant\n<think>\n")
    assert not think_open_at_end("<|im_start|>assistant\n")
    assert not think_open_at_end("<think>a</think> b")


def test_tokenizer_without_chat_template_is_a_clear_error(tmp_path):
    from transformers import AutoTokenizer

    from bai_demo.toy_models import write_tokenizer
    from bai_tools.generation import GenerationError, render_prompts

    tok = AutoTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    texts, ids = render_prompts(tok, [[{"role": "user", "content": "hi"}]])
    assert texts[0].endswith("<|im_start|>assistant\n<think>\n")
    assert ids[0] == tok(texts[0], add_special_tokens=False)["input_ids"]
    tok.chat_template = None
    with pytest.raises(GenerationError, match="no chat template"):
        render_prompts(tok, [[{"role": "user", "content": "hi"}]])


def test_old_output_flags_still_work_for_one_release_and_warn(tmp_path, model_dir, capsys):
    for old, new, value, needle in (("--png-out", "--png", tmp_path / "p.jpg", "must end in .png"),
                                    ("--json-out", "--json", tmp_path, "is a directory")):
        capsys.readouterr()
        assert probe.main([str(model_dir), old, str(value)]) == 2  # parsed into the new option
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"bai-probe: warning: {old} is deprecated") and new in err[0]
        assert err[-1].startswith(f"bai-probe: error: {old} {value}") and needle in err[-1]
