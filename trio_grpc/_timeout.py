"""`grpc-timeout` header values (sans-I/O): at most 8 digits and a unit."""

from __future__ import annotations

import math

# Seconds per unit as an exact numerator/denominator, so that a value is converted with a single rounding
# (1100000u is 1.1, where 1100000 * 1e-6 would be 1.0999999999999999).
_UNIT_SECONDS = {
    b"H": (3600, 1),
    b"M": (60, 1),
    b"S": (1, 1),
    b"m": (1, 10**3),
    b"u": (1, 10**6),
    b"n": (1, 10**9),
}
# Finest unit first, so the value keeps the most precision that fits in 8 digits.
_FORMAT_ORDER = (b"n", b"u", b"m", b"S", b"M", b"H")
_MAX_VALUE = 99_999_999


def _to_seconds(amount: int, unit: bytes) -> float:
    numerator, denominator = _UNIT_SECONDS[unit]
    return amount * numerator / denominator


def parse_timeout(value: bytes) -> float:
    """Seconds; raises ValueError for anything the spec does not allow."""
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit() and unit in _UNIT_SECONDS):
        raise ValueError(f"malformed grpc-timeout {value!r}")
    return _to_seconds(int(digits), unit)


def format_timeout(seconds: float) -> bytes:
    """The finest unit that fits, rounded up so that the peer never sees a shorter deadline."""
    seconds = max(seconds, 0.0)
    for unit in _FORMAT_ORDER:
        numerator, denominator = _UNIT_SECONDS[unit]
        amount = math.ceil(seconds * denominator / numerator)
        if _to_seconds(amount, unit) < seconds:  # the float product was rounded down onto an integer
            amount += 1
        if amount <= _MAX_VALUE:
            return b"%d%s" % (amount, unit)
    return b"%dH" % _MAX_VALUE
