"""Rule-based math answer scoring and the think-block rule (what a response is scored on)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from bai_core.constants import THINK_CLOSE, THINK_OPEN

__all__ = ["answer_part", "extract_answer", "normalize_answer", "score_answer", "score_response"]

_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_FRAC_SHORT = re.compile(r"^(-?)\\[dt]?frac(\d)(\d)$")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_REL_TOL = 1e-6
_ABS_TOL = 1e-9


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces allowed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        rest = text[start + len("\\boxed"):].strip()  # "\boxed 5" form
        return rest.split("$")[0].strip() or None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: the response was cut


def extract_answer(response: str) -> str | None:
    """Last \\boxed{} content; else the text after the last 'answer is'; else the last number."""
    boxed = _last_boxed(response)
    if boxed is not None:
        return boxed
    if "\\boxed" in response or "\\fbox" in response:
        return None  # an unbalanced box: the response was cut inside its answer
    matches = list(_ANSWER_IS.finditer(response))
    if matches:
        tail = matches[-1].group(1).strip().splitlines()[0]
        return tail.strip().rstrip(".").strip() or None
    numbers = _NUMBER.findall(response)
    return numbers[-1] if numbers else None


def normalize_answer(answer: str) -> str:
    """Canonical string form: no $, spaces, \\text{}, \\left/\\right, thousands commas or
    trailing period."""
    s = answer.strip()
    s = _TEXT.sub(r"\1", s)
    for token in ("$", "\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "^\\circ", "^{\\circ}"):
        s = s.replace(token, "")
    s = s.replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _to_number(s: str) -> Fraction | float | None:
    m = _FRAC.match(s) or _FRAC_SHORT.match(s)
    if m:
        sign, num, den = m.groups()
        a, b = _to_number(num), _to_number(den)
        if a is None or b is None or b == 0:
            return None
        val = Fraction(a) / Fraction(b) if isinstance(a, Fraction) and isinstance(b, Fraction) \
            else float(a) / float(b)
        return -val if sign else val
    try:
        if re.fullmatch(r"-?\d+/\d+", s):
            return Fraction(s) if not s.endswith("/0") else None
        if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
            return Fraction(s)
        val = float(s)
        return val if math.isfinite(val) else None
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def score_answer(response: str, reference: str) -> float:
    """1.0 if the final answer of `response` matches `reference` (exactly after normalization,
    or numerically within rel 1e-6 / abs 1e-9), else 0.0."""
    pred = extract_answer(response)
    if pred is None or reference is None:
        return 0.0
    ref_boxed = _last_boxed(str(reference))
    p = normalize_answer(pred)
    r = normalize_answer(ref_boxed if ref_boxed is not None else str(reference))
    if not p or not r:
        return 0.0
    return float(p == r or any(math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)
                               for a in _candidates(p) for b in _candidates(r)))


def _candidates(s: str) -> list[float]:
    """Numeric readings of a normalized answer; "50%" reads as 50 or 0.5."""
    if s.endswith("%"):
        val = _to_number(s[:-1])
        return [] if val is None else [float(val), float(val) / 100]
    val = _to_number(s)
    return [] if val is None else [float(val)]


def answer_part(response: str, think_open: bool = False) -> str | None:
    """The part of a response that is scored: the text after its last `</think>`; None when a
    think block is left open (opened by the prompt, `think_open`, or by the response itself)."""
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1]
    if think_open or THINK_OPEN in response:
        return None
    return response


def score_response(response: str, reference: str, think_open: bool = False) -> float:
    """`score_answer` of the answer part; 0.0 for an unfinished think block, so scratch work
    that mentions the right number earns nothing."""
    answer = answer_part(response, think_open)
    return 0.0 if answer is None else score_answer(answer, reference)
