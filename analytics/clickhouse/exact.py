"""Exactly rounded float sums in ClickHouse, so ClickHouse and SQLite agree to the last bit.

SQLite sums with ``math.fsum`` (exact, then rounded once). ClickHouse's ``sumKahan`` is
compensated, not exact, and its result depends on the order in which threads merge
partial states: the same query could differ from SQLite, and from itself, in the last
bit (a flaky parity test on A/B latency sums). Here each value is split into its
integer mantissa and binary exponent and shifted into a fixed-point ``Int256`` with
:data:`SCALE_BITS` fractional bits; integer sums are exact and order-free, and Python
rounds the total once (:func:`to_float`), as ``fsum`` does.

Exact for finite values with magnitude in about ``[1e-23, 1e25]`` (smaller values lose
the bits below ``2**-128``) over up to ``2**40`` rows; NULL counts as 0.

    sql = f"SELECT {exact_sum('cost')} AS cost_x FROM t"   # text of an Int256
    total = to_float(frame["cost_x"][0])
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["SCALE_BITS", "exact_sum", "fixed", "to_float", "to_int"]

SCALE_BITS = 128
"""Fractional bits of the fixed-point sums."""
_MANTISSA = (1 << 52) - 1


def fixed(expr: str) -> str:
    """SQL: the Float64 ``expr`` (NULL: 0) as an exact ``Int256`` times ``2**SCALE_BITS``."""
    bits = f"reinterpretAsUInt64(toFloat64(ifNull({expr}, 0)))"
    exponent = f"toInt16(bitAnd(bitShiftRight({bits}, 52), 2047))"
    # Subnormals (exponent 0) have no implicit leading 1 and the exponent of 1.
    mantissa = f"toInt256(bitAnd({bits}, {_MANTISSA}) + if({exponent} = 0, 0, {1 << 52}))"
    shift = f"(greatest({exponent}, 1) - {1075 - SCALE_BITS})"
    # `if` evaluates both branches, so the shift is split into a left and a right part.
    magnitude = (f"bitShiftRight(bitShiftLeft({mantissa}, greatest({shift}, 0)), "
                 f"greatest(-{shift}, 0))")
    return f"if(bitShiftRight({bits}, 63) = 1, -{magnitude}, {magnitude})"


def exact_sum(expr: str) -> str:
    """SQL: the exact fixed-point sum of ``expr`` as text (decode with :func:`to_float`)."""
    return f"toString(sum({fixed(expr)}))"


def to_int(text: object) -> int:
    """The fixed-point integer of an :func:`exact_sum` cell (text, or NULL/None: 0)."""
    return 0 if text is None or text != text else int(str(text))  # NaN: an empty group


def to_float(value: object) -> float:
    """A fixed-point sum (text or int) rounded once to the nearest float."""
    return float(Fraction(to_int(value) if not isinstance(value, int) else value,
                          1 << SCALE_BITS))
