"""What every exercise check shares: run an answer on cases, compare with the library, report, never raise.

A check calls the student's function on each :class:`Case` (on a copy of the inputs), compares what it
returns with the value the library computes, prints one line per case and returns a
:class:`CheckResult`. An unfilled stub (``raise NotImplementedError`` or returning ``None``), an
exception in the student's code, a wrong type or shape: each is a failure message, never an error in
the notebook.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["CheckResult", "Case", "run_check", "compare"]


@dataclass
class CheckResult:
    """The outcome of one check: the labels of the cases that passed, and ``"label: reason"`` for the others."""

    name: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.passed) and not self.failed

    def __bool__(self) -> bool:
        return self.ok

    def summary(self) -> str:
        total = len(self.passed) + len(self.failed)
        return f"{self.name}: {len(self.passed)}/{total} cases passed" + (" - well done!" if self.ok else "")


@dataclass
class Case:
    """One input of a check: ``args`` for the answer, the library's ``expected`` value, a ``hint`` shown
    when the case fails."""

    label: str
    args: tuple
    expected: Any
    hint: str = ""


class _Unfilled(Exception):
    """The answer is still the stub."""


def _as_tensor(value: Any) -> torch.Tensor:
    if torch.is_tensor(value):
        return value.detach().cpu()
    return torch.as_tensor(np.asarray(value))


def compare(got: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """``None`` when ``got`` matches ``expected`` (tensors and arrays by shape and value, numbers up to
    ``rtol``/``atol`` with NaN equal to NaN, mappings key by key, sequences item by item), else why not."""
    if got is None:
        raise _Unfilled("returned None")
    if torch.is_tensor(expected) or isinstance(expected, np.ndarray):
        try:
            g = _as_tensor(got)
        except Exception:  # noqa: BLE001 - any unconvertible answer is a failure message
            return f"expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__}"
        e = _as_tensor(expected)
        if tuple(g.shape) != tuple(e.shape):
            return f"shape {tuple(g.shape)}, expected {tuple(e.shape)}"
        if g.is_complex() or not (g.is_floating_point() or g.dtype in (torch.int64, torch.int32, torch.int16,
                                                                          torch.int8, torch.uint8, torch.bool)):
            return f"unexpected dtype {g.dtype}"
        g, e = g.double(), e.double()
        if not torch.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True):
            diff = (g - e).abs().nan_to_num(nan=math.inf)
            i = int(diff.argmax())
            return (f"values differ: largest difference {float(diff.flatten()[i]):.3g} at flat index {i} "
                    f"(got {float(g.flatten()[i]):.6g}, expected {float(e.flatten()[i]):.6g})")
        return None
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"expected a dict with keys {sorted(expected)}, got {type(got).__name__}"
        missing = [k for k in expected if k not in got]
        if missing:
            return f"missing key(s) {missing}"
        for key in expected:
            problem = compare(got[key], expected[key], rtol, atol)
            if problem:
                return f"[{key!r}] {problem}"
        return None
    if isinstance(expected, str):
        return None if got == expected else f"got {got!r}, expected {expected!r}"
    if isinstance(expected, (bool, int, float, np.number)):
        try:
            g = float(got)
        except Exception:  # noqa: BLE001
            return f"expected a number, got {type(got).__name__}"
        e = float(expected)
        if math.isnan(e) and math.isnan(g):
            return None
        if math.isinf(e) or math.isinf(g):
            return None if g == e else f"got {g:.6g}, expected {e:.6g}"
        return None if math.isclose(g, e, rel_tol=rtol, abs_tol=atol) else f"got {g:.6g}, expected {e:.6g}"
    if isinstance(expected, Sequence):
        if not isinstance(got, Sequence) or isinstance(got, str):
            return f"expected a sequence of {len(expected)} items, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{len(got)} items, expected {len(expected)}: got {got!r}, expected {expected!r}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare(g, e, rtol, atol)
            if problem:
                return f"item {i}: {problem}"
        return None
    return None if got == expected else f"got {got!r}, expected {expected!r}"


def run_check(name: str, answer: Callable, make_cases: Callable[[], Sequence[Case]], *, rtol: float = 1e-5,
              atol: float = 1e-6, verbose: bool = True) -> CheckResult:
    """Run ``answer(*case.args)`` on every case of ``make_cases()`` and compare with ``case.expected``.

    Prints ``PASS``/``FAIL`` per case (with the hint of a failed case) unless ``verbose=False``; returns a
    :class:`CheckResult`. Never raises (except on Ctrl-C).
    """
    result = CheckResult(name)
    lines: list[str] = []
    try:
        cases = list(make_cases())
    except Exception as exc:  # noqa: BLE001 - a bug of the check must not stop the notebook either
        cases = []
        result.failed.append(f"setup: the check could not build its cases ({type(exc).__name__}: {exc})")
        lines.append(f"  FAIL {result.failed[-1]}")
    if not callable(answer):
        result.failed = [f"{c.label}: not a function" for c in cases] or ["not a function"]
        lines = [f"  FAIL expected a function, got {type(answer).__name__}"]
        cases = []
    for i, case in enumerate(cases):
        try:
            problem = compare(answer(*copy.deepcopy(case.args)), case.expected, rtol, atol)
        except (NotImplementedError, _Unfilled) as exc:
            if i == 0:  # the stub: one message, every case counted as failed
                reason = ("not filled in yet: the function " +
                          ("returned None" if isinstance(exc, _Unfilled) else "raises NotImplementedError"))
                result.failed.extend(f"{c.label}: {reason}" for c in cases)
                lines.append(f"  FAIL {reason} (write its body, or set solutions = True in the parameters cell)")
                break
            problem = "returned None" if isinstance(exc, _Unfilled) else "raised NotImplementedError"
        except Exception as exc:  # noqa: BLE001 - the student's exception is the message
            problem = f"raised {type(exc).__name__}: {exc}"
        if problem is None:
            result.passed.append(case.label)
            lines.append(f"  PASS {case.label}")
        else:
            result.failed.append(f"{case.label}: {problem}")
            lines.append(f"  FAIL {case.label}: {problem}" + (f"\n       hint: {case.hint}" if case.hint else ""))
    if verbose:
        print("\n".join([result.summary()] + lines))
    return result
