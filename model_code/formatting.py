"""CSV text of prediction arrays: each number is C's `"%.9g"` of the float32 prediction, built by numpy.

Why by hand: formatting a large batch request one number at a time (`repr`, ~0.8 µs each) cost as much as
XGBoost's prediction itself, and numpy's `astype(str)` is slower still. The fast libraries (orjson, Arrow)
are not in SageMaker's XGBoost image, and endpoints often run with network isolation, so nothing can be
pip-installed there; this module needs numpy only and gives the same bytes everywhere. Nine significant
digits are the fewest that give back every float32 exactly (IEEE 754 binary32), and the text is what
`"%.9g" % value` prints, byte for byte: the digits come from exact integer arithmetic (below), and numbers
outside that fast range (rare for predictions) are formatted by `"%.9g"` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIGITS = 9
_POW10 = 10 ** np.arange(DIGITS - 1, -1, -1, dtype=np.int64)  # 10^8 .. 10^0
_FIVE = 5 ** np.arange(0, 17, dtype=np.int64)  # 5^k, k = 0..16: M * 5^k < 2^24 * 5^16 < 2^62
_TEN = 10.0 ** np.arange(0, 17)  # exact in float64
# Decimal exponents done here: 10^-8 <= |x| < 10^9 (the estimate may move by one, hence the margin).
_LOW, _HIGH = -8, 8
# ASCII digit i (row 0..2) of every number 0..999, and its trailing zeros (3 for 0): the 9 digits are
# three lookups per position instead of nine divisions.
_THREE = np.array([list(b"%03d" % i) for i in range(1000)], dtype=np.uint8).T.copy()
_TRAILING = np.array([3 - len((b"%03d" % i).rstrip(b"0")) for i in range(1000)], dtype=np.int64)
# A number's text in fixed columns, NUL where a character is absent (the holes are dropped at the end):
# sign, "0." and up to three zeros (0.000ddd), then 9 digits each followed by a possible point, then the
# exponent "e-0X" (%g's exponent form, used here for 1e-8 <= |x| < 1e-4), then the separator.
_WIDTH = 1 + 2 + 3 + 2 * DIGITS - 1 + 4 + 1
_ZERO, _DOT, _MINUS = ord("0"), ord("."), ord("-")
# Numbers formatted at a time: their work arrays (~40 bytes a number) then stay in a core's cache
# (measured: 25% faster on 200,000 numbers than one pass over all of them).
CHUNK = 32768


def _digits(mantissa: np.ndarray, binary_exp: np.ndarray, decimal_exp: np.ndarray) -> np.ndarray:
    """The 9-digit integer q with q x 10^(e-8) = x correctly rounded (half to even), as printf rounds.

    x = mantissa x 2^binary_exp exactly, so x x 10^k = mantissa x 5^k x 2^(binary_exp + k): an int64
    product and a shift, with no float rounding anywhere.
    """
    k = (DIGITS - 1) - decimal_exp
    product = mantissa * _FIVE[k]
    shift = -(binary_exp + k)
    right = np.maximum(shift, 0)
    q = np.left_shift(product, np.maximum(-shift, 0)) >> right
    remainder = product - (q << right)
    half = np.left_shift(np.int64(1), np.maximum(right - 1, 0))
    up = (right > 0) & ((remainder > half) | ((remainder == half) & (q & 1 == 1)))
    return q + up


def _exact(magnitude: np.ndarray, decimal_exp: np.ndarray) -> np.ndarray:
    """`_digits` of some magnitudes (float32 values held in float64)."""
    fraction, binary_exp = np.frexp(magnitude)
    mantissa = (fraction * (1 << 24)).astype(np.int64)  # exact: a float32 has 24 significant bits
    return _digits(mantissa, binary_exp.astype(np.int64) - 24, decimal_exp)


def _decimal(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fast, q, e): x = q x 10^(e-8) to 9 digits where `fast`; elsewhere (0, inf, nan, far out) unset.

    q is first the nearest integer of x x 10^k in float64: one rounding (10^k is exact), so off by under
    1e-7 at these magnitudes. Only where that lands within 1e-6 of a half, which rounding to an integer
    could get wrong, is q recomputed exactly (`_digits`).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.abs(flat).astype(np.float64)
        decimal_exp = np.floor(np.log10(magnitude))
    fast = np.isfinite(decimal_exp) & (decimal_exp >= _LOW + 1) & (decimal_exp <= _HIGH)
    decimal_exp = np.where(fast, decimal_exp, 0).astype(np.int64)
    magnitude = np.where(fast, magnitude, 1.0)
    scaled = magnitude * _TEN[(DIGITS - 1) - decimal_exp]
    q = np.rint(scaled).astype(np.int64)
    unsure = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    if unsure.any():
        q[unsure] = _exact(magnitude[unsure], decimal_exp[unsure])
    for _ in range(2):  # log10 may be one off near powers of ten, and rounding may carry to 10^9
        low, high = fast & (q < _POW10[0]), fast & (q >= 10 * _POW10[0])
        if not (low.any() or high.any()):
            break
        decimal_exp = decimal_exp - low + high
        fast &= (decimal_exp >= _LOW) & (decimal_exp <= _HIGH)  # left the range: "%.9g" does it
        moved = (low | high) & fast
        q[moved] = _exact(magnitude[moved], decimal_exp[moved])
    fast &= (q >= _POW10[0]) & (q < 10 * _POW10[0])
    return fast, np.where(fast, q, _POW10[0]), np.where(fast, decimal_exp, 0)


def format_numbers(values: np.ndarray, separator: bytes = b"\n") -> np.ndarray:
    """`"%.9g" % v` of every float32 in `values`, each followed by `separator`.

    Returns a (n, _WIDTH) uint8 matrix whose NUL bytes are holes to drop (`bytes.translate(None, b"\\0")`).
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    fast, q, e = _decimal(flat)
    q32 = q.astype(np.int32)
    groups = (q32 // 1_000_000, q32 // 1000 % 1000, q32 % 1000)
    # Digits left once %g drops the trailing zeros (q >= 10^8: the first group is not zero).
    trailing = np.where(
        groups[2] > 0,
        _TRAILING[groups[2]],
        3 + np.where(groups[1] > 0, _TRAILING[groups[1]], 3 + _TRAILING[groups[0]]),
    )
    significant = DIGITS - trailing
    fixed = e >= -4  # %g prints positionally when -4 <= e < precision, else with an exponent
    small = fixed & (e < 0)
    scientific = ~fixed
    # Built column by column (each a contiguous row here), transposed once at the end.
    columns = np.empty((_WIDTH, len(flat)), dtype=np.uint8)
    columns[0] = _char(np.signbit(flat), _MINUS)
    columns[1] = _char(small, _ZERO)
    columns[2] = _char(small, _DOT)
    for i in range(3):  # 0.0ddd .. 0.000ddd
        columns[3 + i] = _char(small & (e < -1 - i), _ZERO)
    point = np.where(fixed & ~small, e, -1)  # the digit a point follows (the first in the exponent form)
    point[scientific] = 0
    for j in range(DIGITS):
        kept = (significant > j) | (fixed & (e >= j))  # integer digits stay, even zeros
        np.multiply(_THREE[j % 3].take(groups[j // 3]), kept, out=columns[6 + 2 * j], casting="unsafe")
        if j < DIGITS - 1:
            columns[7 + 2 * j] = _char((point == j) & (significant > j + 1), _DOT)
    columns[-5] = _char(scientific, ord("e"))
    columns[-4] = _char(scientific, _MINUS)
    columns[-3] = _char(scientific, _ZERO)
    columns[-2] = scientific.view(np.uint8) * (_ZERO - e).astype(np.uint8)  # e is -8..-5 there
    columns[-1] = separator[0]
    text = np.ascontiguousarray(columns.T)
    for i in np.flatnonzero(~fast):  # zero, inf, nan, and magnitudes outside 1e-8 .. 1e9
        word = b"%.9g" % float(flat[i])
        text[i, :-1] = 0
        text[i, : len(word)] = np.frombuffer(word, dtype=np.uint8)
    return text


def csv_lines(
    values: np.ndarray, names: Sequence[str] | None = None, label_index: np.ndarray | None = None
) -> bytes:
    """CSV body: one line per row of `values` ((n,) or (n, k) float32), optionally after a label column.

    The label of row i is `names[label_index[i]]`; names must not contain NUL (the holes dropped at the
    end), and one that needs CSV quoting is quoted the way the csv module quotes it.
    """
    rows = len(values)
    if not rows:
        return b""
    per_row = values.size // rows
    table = None
    if names is not None and label_index is not None:
        encoded = np.array([quoted(name).encode("utf-8") for name in names], dtype=bytes)
        table = np.zeros((len(names), encoded.dtype.itemsize + 1), dtype=np.uint8)
        table[:, :-1] = encoded.view(np.uint8).reshape(len(names), -1)
        table[:, -1] = ord(",")
        label_index = np.asarray(label_index)
    step = max(1, CHUNK // per_row)
    pieces = []
    for start in range(0, rows, step):
        text = format_numbers(values[start : start + step], b"," if per_row > 1 else b"\n")
        text = text.reshape(-1, per_row * _WIDTH)
        text[:, -1] = ord("\n")  # the last number of a row ends it
        if table is not None:
            text = np.concatenate([table[label_index[start : start + step]], text], axis=1)
        pieces.append(text.tobytes().translate(None, b"\0"))  # drop the holes
    return b"".join(pieces)


def _char(mask: np.ndarray, char: int) -> np.ndarray:
    """`char` where `mask`, NUL elsewhere, as uint8 (no int64 temporaries)."""
    return mask.view(np.uint8) * np.uint8(char)


def quoted(label: str) -> str:
    """A label as one CSV field (quoted as the csv module quotes it when it holds , " or a line break)."""
    if any(c in label for c in ',"\r\n'):
        return '"' + label.replace('"', '""') + '"'
    return label
