"""ClickHouse's fixed-point sums are exactly rounded, as SQLite's fsum is, in any row order."""

from __future__ import annotations

import math
import random

import pytest

pytest.importorskip("chdb")

from analytics.clickhouse import open_runner
from analytics.clickhouse.exact import exact_sum, to_float

# Cancellation, tiny and large magnitudes, negatives, values with no exact binary form.
HARD = [1e16, 1.0, -1e16, 3.3, 1e-10, 2.0**-60, -7.25e3, 0.1, 0.2, 0.3, 123456.789e3,
        -0.0, 5e-324 * 0, 1e20, -1e20, 2.0**52 + 1]


def _sum_in_clickhouse(runner, values: list[float]) -> float:
    literal = "[" + ", ".join(f"toFloat64('{v!r}')" for v in values) + "]"
    frame = runner.frame(f"SELECT {exact_sum('x')} AS s FROM (SELECT arrayJoin({literal}) AS x)")
    return to_float(frame["s"][0])


def test_sums_equal_fsum_whatever_the_order(tmp_path):
    runner = open_runner(f"chdb://{tmp_path}")
    rng = random.Random(7)
    values = HARD + [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 12) for _ in range(500)]
    expected = math.fsum(values)
    assert sum(values) != expected  # a naive sum is off here: the test can tell them apart
    for _ in range(3):
        rng.shuffle(values)
        assert _sum_in_clickhouse(runner, values) == expected


def test_null_counts_as_zero_and_an_empty_sum_is_zero(tmp_path):
    runner = open_runner(f"chdb://{tmp_path}")
    frame = runner.frame(f"SELECT {exact_sum('x')} AS s FROM "
                         "(SELECT arrayJoin([1.5, NULL, 2.25]) AS x)")
    assert to_float(frame["s"][0]) == 3.75
    empty = runner.frame(f"SELECT {exact_sum('x')} AS s FROM "
                         "(SELECT toFloat64(number) AS x FROM numbers(0))")
    assert to_float(empty["s"][0]) == 0.0
