"""Symbolic equivalence of two LaTeX leaves, run only inside the worker process (see ``worker.py``).

LaTeX is turned into sympy by ``latex2sympy2_extended``'s ANTLR grammar, never by sympy's string parser: its
only ``sympify`` calls receive number tokens the lexer has already restricted to ``[0-9.]`` (plus an
``E±digits`` exponent), and sympy objects built from the parse tree. We never pass it ``variable_values``
(the one path that would ``parse_expr`` a string). Structure-aware comparison (equations, sets, intervals,
matrices) is delegated to ``math_verify.grader.verify`` on the parsed objects, with its ``signal.alarm`` timeout
disabled: the parent process enforces wall-clock limits by killing this process instead.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.math_normalization import NormalizationConfig
from math_verify.grader import verify
from sympy.core.relational import Relational
from sympy.logic.boolalg import Boolean
from sympy.matrices import MatrixBase

logging.getLogger("math_verify").setLevel(logging.ERROR)
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)

_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
)
# An i that is not part of a word or a command (\pi, \sin, \infty) is the imaginary unit.
_IMAGINARY = re.compile(r"(?<![a-zA-Z\\])i(?![a-zA-Z])")
_EXACT_REL_TOL = sympy.Float("1e-25", 40)
_PRECISION = 40


# The grammar reads "dc" as the differential of c (ab + cd and ba + dc then differ); outside integrals and
# derivatives a leading d is a variable: "{d}c" parses as a product.
_DIFFERENTIAL = re.compile(r"(?<![\\a-zA-Z])d(?=[a-zA-Z])")


@lru_cache(maxsize=4096)
def parse(latex: str) -> sympy.Basic | MatrixBase | None:
    """LaTeX → sympy through the ANTLR grammar; None when it does not parse."""
    if "\\int" not in latex and "\\frac{d" not in latex and "\\partial" not in latex:
        latex = _DIFFERENTIAL.sub("{d}", latex)
    complex_unit = bool(_IMAGINARY.search(latex))
    try:
        expr = latex2sympy(
            latex,
            is_real=not complex_unit,
            convert_degrees=False,
            normalization_config=_NORMALIZATION,
        )
    except Exception:  # the grammar raises plain Exception on syntax errors
        return None
    except RecursionError:
        return None
    if complex_unit and isinstance(expr, sympy.Basic):
        unit = {symbol: sympy.I for symbol in expr.free_symbols if getattr(symbol, "name", "") == "i"}
        if unit:
            expr = expr.xreplace(unit)
    return expr


def _is_plain_number(expr: object) -> bool:
    return (
        isinstance(expr, sympy.Expr)
        and not isinstance(expr, (Relational, Boolean, MatrixBase, sympy.Tuple))
        and not expr.free_symbols
    )


def _numeric_equal(reference: sympy.Expr, prediction: sympy.Expr, rel_tol: float) -> bool | None:
    """Compare closed-form numbers by high-precision evaluation; None when that is not meaningful."""
    ref_value = sympy.N(reference, _PRECISION)
    pred_value = sympy.N(prediction, _PRECISION)
    if not (ref_value.is_number and pred_value.is_number):
        return None
    if ref_value.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) or pred_value.has(
        sympy.oo, -sympy.oo, sympy.zoo, sympy.nan
    ):
        return None
    difference = abs(ref_value - pred_value)
    scale = max(abs(ref_value), abs(pred_value))
    inexact = reference.has(sympy.Float) or prediction.has(sympy.Float)
    tolerance = sympy.Float(repr(float(rel_tol)), _PRECISION) if inexact else _EXACT_REL_TOL
    return bool(difference <= tolerance * scale) if scale != 0 else bool(difference == 0)


def equal(prediction: str, reference: str, rel_tol: float) -> bool:
    """Whether two normalised LaTeX leaves denote the same mathematical object."""
    ref_expr = parse(reference)
    pred_expr = parse(prediction)
    if ref_expr is None or pred_expr is None:
        return False
    try:
        if ref_expr == pred_expr:
            return True
        if _is_plain_number(ref_expr) and _is_plain_number(pred_expr):
            numeric = _numeric_equal(ref_expr, pred_expr, rel_tol)
            if numeric is not None:
                return numeric
        if verify(
            ref_expr,
            pred_expr,
            float_rounding=6,
            numeric_precision=15,
            strict=True,
            allow_set_relation_comp=True,  # "x < 3" and "(-\\infty, 3)" either way round
            timeout_seconds=None,
        ):
            return True
        return _scaled_equations(ref_expr, pred_expr)
    except (Exception, RecursionError):
        return False


def _scaled_equations(reference: object, prediction: object) -> bool:
    """``2x + 2y = 4`` and ``x + y = 2``: equations whose sides differ by a nonzero constant factor."""
    if not (isinstance(reference, sympy.Equality) and isinstance(prediction, sympy.Equality)):
        return False
    ref_zero = reference.lhs - reference.rhs
    pred_zero = prediction.lhs - prediction.rhs
    if ref_zero == 0 or pred_zero == 0 or ref_zero.free_symbols != pred_zero.free_symbols:
        return False
    factor = sympy.simplify(ref_zero / pred_zero)
    return bool(factor.is_number and factor != 0 and factor.is_finite)


_WARM_UP = [
    ("\\frac{1}{2}+x", "x+0.5"),
    ("2(x+1)", "2x+2"),
    ("1 x", "1"),
    ("y=2x+1", "y=1+2x"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("(1+i)^2", "2i"),
    ("x \\le 3", "(-\\infty, 3]"),
    ("\\begin{pmatrix}1\\\\x\\end{pmatrix}", "\\begin{bmatrix}1\\\\x\\end{bmatrix}"),
]


def warm_up() -> None:
    """Load the grammar and the lazily built parts of sympy (simplify, solvers, sets, matrices, evalf).

    The first ``simplify`` in a fresh process alone takes about a second; doing it here, before the worker
    reports ready, keeps that cost out of the first real comparison's time limit.
    """
    for prediction, reference in _WARM_UP:
        equal(prediction, reference, 1e-6)
