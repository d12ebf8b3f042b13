"""CSV text of predictions: the numpy formatter prints exactly what "%.9g" prints, for every float32."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_code.formatting import CHUNK, csv_lines, format_numbers
from model_code.inference import BULK_NUMBERS, Prediction, output_fn


def _expected(values: np.ndarray) -> bytes:
    return b"".join(b"%.9g\n" % float(v) for v in values.astype(np.float32))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=60))
def test_every_float32_prints_as_printf_does(values: list[float]) -> None:
    array = np.array(values, dtype=np.float32)
    assert csv_lines(array) == _expected(array)


def test_random_bit_patterns_and_the_edges_of_each_decade() -> None:
    """Half a million arbitrary float32 (all exponents, signs, subnormals) plus the neighbours of 10^k."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 500_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    powers = np.float32(10.0) ** np.arange(-12, 12, dtype=np.float32)
    edges = np.concatenate(
        [
            powers,
            np.nextafter(powers, np.float32(0)),
            np.nextafter(powers, np.float32(np.inf)),
            -powers,
            np.array([0.0, -0.0, 0.5, 1.0, 999999999.5, 99999999.5, 1e-8, 9.99999999e-9], np.float32),
        ]
    ).astype(np.float32)
    for array in (bits, edges):
        assert csv_lines(array) == _expected(array)


def test_every_float32_reads_back_exactly() -> None:
    """Nine significant digits: the text gives back the very float32 the model produced."""
    values = np.random.default_rng(3).random(100_000).astype(np.float32) ** 5
    parsed = np.array(csv_lines(values).split(), dtype=np.float64).astype(np.float32)
    assert np.array_equal(parsed, values)


@pytest.mark.parametrize("count", [500, CHUNK // 2 + 1])  # in one piece, and across pieces
def test_probability_matrix_with_labels_needing_quotes(count: int) -> None:
    matrix = np.random.default_rng(5).random((count, 3)).astype(np.float32)
    winners = matrix.argmax(axis=1)
    names = ["low", 'has "quote"', "a,b"]
    rows = list(csv.reader(io.StringIO(csv_lines(matrix, names, winners).decode())))
    assert len(rows) == count
    for row, probs, winner in zip(rows, matrix, winners, strict=True):
        assert row[0] == names[winner]
        assert row[1:] == [f"{p:.9g}" for p in probs.tolist()]


def test_numbers_matrix_has_one_separator_per_number() -> None:
    text = format_numbers(np.array([1.5, -(2.0**-20)], dtype=np.float32), separator=b",")
    assert text.tobytes().translate(None, b"\0") == b"1.5,-9.53674316e-07,"


@pytest.mark.parametrize("problem", ["binary", "regression", "multiclass"])
def test_output_fn_gives_the_same_text_for_small_and_large_answers(problem: str) -> None:
    """A record's line does not depend on how many records share its request (bulk vs one-by-one path)."""
    rng = np.random.default_rng(11)
    if problem == "multiclass":
        values = rng.random((BULK_NUMBERS, 3)).astype(np.float32)
        classes: tuple[str, ...] = ("a", "b", "c")
    else:
        values = (rng.standard_normal(BULK_NUMBERS * 2) * 1000).astype(np.float32)
        classes = ("0", "1") if problem == "binary" else ()
    big, _ = output_fn(Prediction(problem, classes, values), "text/csv")
    small = [
        output_fn(Prediction(problem, classes, values[i : i + 7]), "text/csv")[0] for i in range(0, 70, 7)
    ]
    big_text = big.decode() if isinstance(big, bytes) else big
    small_text = "".join(s.decode() if isinstance(s, bytes) else s for s in small)
    assert big_text.splitlines()[:70] == small_text.splitlines()
