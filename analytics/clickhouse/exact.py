"""Exactly rounded float sums in ClickHouse, so ClickHouse and SQLite agree to the last bit.

SQLite sums with ``math.fsum`` (exact, then rounded once). ClickHouse's ``sumKahan`` is
compensated, not exact, and its result depends on the order in which threads merge
partial states: the same query could differ from SQLite, and from itself, in the last
bit (a flaky parity test on A/B latency sums). Here each value is split into its
integer mantissa and binary exponent, and the signed mantissas are summed per exponent
(``sumResample`` over the 2,046 exponents of finite floats: one ``Int128`` counter each);
integer sums are exact and order-free. Python shifts the per-exponent sums into one
integer with :data:`SCALE_BITS` fractional bits (every finite float is a whole multiple
of ``2**-1074``) and rounds the total once (:func:`to_float`), as ``fsum`` does.

Exact for every finite value (NULL counts as 0) over up to ``2**74`` rows. Cheaper than
the ``Int256`` fixed point it replaced (about as fast as a plain ``sum``: 10M chat spans'
costs 1.6 CPU s for both against 2.0 s with ``Int256`` shifts).

    sql = f"SELECT {exact_sum('cost')} AS cost_x FROM t"   # text: 'exponent:sum ...'
    total = to_float(frame["cost_x"][0])
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["SCALE_BITS", "exact_sum", "to_float", "to_int"]

SCALE_BITS = 1074
"""Fractional bits of the integers :func:`to_int` returns (the smallest subnormal's)."""
_MANTISSA = (1 << 52) - 1


def exact_sum(expr: str) -> str:
    """SQL: the exact sum of the Float64 ``expr`` (NULL: 0) as text, ``'exponent:sum'``
    pairs for the non-zero per-exponent sums of the mantissas (decode with :func:`to_float`
    or :func:`to_int`)."""
    bits = f"reinterpretAsUInt64(toFloat64(ifNull({expr}, 0)))"
    exponent = f"toUInt16(bitAnd(bitShiftRight({bits}, 52), 2047))"
    # Subnormals (exponent 0) have no implicit leading 1 and the exponent of 1.
    mantissa = f"toInt128(bitAnd({bits}, {_MANTISSA}) + if({exponent} = 0, 0, {1 << 52}))"
    signed = f"if(bitShiftRight({bits}, 63) = 1, -{mantissa}, {mantissa})"
    sums = f"sumResample(1, 2047, 1)({signed}, greatest({exponent}, 1))"
    return (f"arrayStringConcat(arrayFilter(p -> p != '', arrayMap((s, e) -> if(s = 0, '', "
            f"concat(toString(e), ':', toString(s))), {sums}, range(1, 2047))), ' ')")


def to_int(text: object) -> int:
    """An :func:`exact_sum` cell (text, or NULL/None/NaN: 0) as an integer times
    ``2**SCALE_BITS``."""
    if text is None or text != text:  # NaN: an empty group
        return 0
    total = 0
    for pair in str(text).split():
        exponent, _, mantissas = pair.partition(":")
        total += int(mantissas) << (int(exponent) - 1)  # value: m * 2**(e - 1075)
    return total


def to_float(value: object) -> float:
    """An :func:`exact_sum` cell (or the int of :func:`to_int`s added) rounded once."""
    return float(Fraction(to_int(value) if not isinstance(value, int) else value,
                          1 << SCALE_BITS))
