"""Resource quantities, as k8s.io/apimachinery/pkg/api/resource.Quantity.

    quantity := [+-] number [suffix]
    number   := digits | digits "." [digits] | "." digits
    suffix   := n u m "" k M G T P E        decimal SI (powers of 1000)
              | Ki Mi Gi Ti Pi Ei           binary SI (powers of 1024)
              | (e|E) [+-] digits           decimal exponent

A Quantity is exact: its value is kept as an integer number of nano-units
(10^-9). Parsing rounds a finer value away from zero to the next nano-unit
("0.1n" -> "1n") and caps a binary value at 2^63-1, as Kubernetes does. A
quantity remembers its notation (DecimalSI, BinarySI or DecimalExponent) and
prints in Kubernetes' canonical form for it: no fraction, the largest suffix
that loses nothing ("0.5" -> "500m", "1024Mi" -> "1Gi", "1.5Gi" -> "1536Mi").
Negative quantities parse; validation decides whether they are allowed.

Like Kubernetes' ParseQuantity, parse_quantity accepts some odd spellings
("1.", ".5", "1.G"; ".", "+" and "-" alone read as zero), rejects "", and
trims nothing: " 1" is an error. Two departures, both far outside real
use: more than 1000 significant digits or a value of 10^1000 or more is a
QuantityError, and a DecimalSI value of 10^21 or more prints with the "E"
suffix ("1000E") where Kubernetes would drop the suffix.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

FORMAT_ERROR = ("quantities must match the regular expression "
                "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
SUFFIX_ERROR = "unable to parse quantity's suffix"

_NANO = 10**9
_MAX_INT64 = 2**63 - 1
_MAX_DIGITS = 1000
_DIGITS = frozenset("0123456789")
_SUFFIX_LETTERS = frozenset("eEinumkKMGTP")
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX_FOR = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BINARY_SUFFIX_FOR = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]  # by power of 1024
_INT64 = re.compile(r"[+-]?[0-9]+")


class QuantityError(ValueError):
    """A value that is not a quantity; `value` is what was given."""

    def __init__(self, value: object, reason: str):
        super().__init__(f'invalid quantity "{value}": {reason}')
        self.value = value
        self.reason = reason


@functools.total_ordering
class Quantity:
    """An exact, immutable quantity. Compare, hash, add and subtract by value
    (notation is ignored for equality); str() is the canonical form."""

    __slots__ = ("_nanos", "_notation")

    def __init__(self, nanos: int = 0, notation: str = DECIMAL_SI):
        """The quantity `nanos` * 10^-9. Prefer parse_quantity, from_int and from_milli."""
        if notation not in (DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT):
            raise ValueError(f"unknown quantity notation {notation!r}")
        self._nanos = int(nanos)
        self._notation = notation

    @classmethod
    def from_int(cls, value: int, notation: str = DECIMAL_SI) -> Quantity:
        """`value` units, e.g. from_int(16 * 2**30, BINARY_SI) -> "16Gi"."""
        return cls(value * _NANO, notation)

    @classmethod
    def from_milli(cls, value: int, notation: str = DECIMAL_SI) -> Quantity:
        """`value` thousandths, e.g. from_milli(1500) -> "1500m"."""
        return cls(value * 10**6, notation)

    @property
    def notation(self) -> str:
        """DECIMAL_SI, BINARY_SI or DECIMAL_EXPONENT: how the quantity prints."""
        return self._notation

    @property
    def nanos(self) -> int:
        """The exact value in nano-units."""
        return self._nanos

    def as_fraction(self) -> Fraction:
        return Fraction(self._nanos, _NANO)

    def scaled_value(self, scale: int) -> int:
        """The value in units of 10^scale, rounded away from zero (up for
        positive values), as Kubernetes' ScaledValue on a parsed quantity."""
        shift = scale + 9
        if shift <= 0:
            return self._nanos * 10**-shift
        q, r = divmod(abs(self._nanos), 10**shift)
        q += 1 if r else 0
        return -q if self._nanos < 0 else q

    def value(self) -> int:
        """The value in units, rounded up: "1500m" -> 2 (Kubernetes' Value)."""
        return self.scaled_value(0)

    def milli_value(self) -> int:
        """The value in thousandths, rounded up: "0.1" -> 100, "1n" -> 1 (MilliValue)."""
        return self.scaled_value(-3)

    def is_zero(self) -> bool:
        return self._nanos == 0

    def __bool__(self) -> bool:
        return self._nanos != 0

    def _result(self, nanos: int, other: Quantity) -> Quantity:
        # Kubernetes keeps the receiver's notation, unless the receiver is zero.
        return Quantity(nanos, other._notation if self._nanos == 0 else self._notation)

    def __add__(self, other: object) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self._result(self._nanos + other._nanos, other)

    def __sub__(self, other: object) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self._result(self._nanos - other._nanos, other)

    def __mul__(self, factor: object) -> Quantity:
        if not isinstance(factor, int) or isinstance(factor, bool):
            return NotImplemented
        return Quantity(self._nanos * factor, self._notation)

    __rmul__ = __mul__

    def __neg__(self) -> Quantity:
        return Quantity(-self._nanos, self._notation)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self._nanos == other._nanos

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self._nanos < other._nanos

    def __hash__(self) -> int:
        return hash(self._nanos)

    def format(self) -> str:
        """Kubernetes' canonical form. BinarySI falls back to DecimalSI below
        1024 in magnitude or when the value is not a whole number."""
        if self._nanos == 0:
            return "0"
        sign = "-" if self._nanos < 0 else ""
        a = abs(self._nanos)
        if self._notation == BINARY_SI and a >= 1024 * _NANO and a % _NANO == 0:
            units, power = a // _NANO, 0
            while units % 1024 == 0 and power < 6:
                units //= 1024
                power += 1
            return f"{sign}{units}{_BINARY_SUFFIX_FOR[power]}"
        mantissa, exponent = a, -9
        while mantissa % 10 == 0:
            mantissa //= 10
            exponent += 1
        while exponent % 3:
            mantissa *= 10
            exponent -= 1
        if self._notation == DECIMAL_EXPONENT:
            return f"{sign}{mantissa}e{exponent}" if exponent else f"{sign}{mantissa}"
        if exponent > 18:
            mantissa *= 10 ** (exponent - 18)
            exponent = 18
        return f"{sign}{mantissa}{_DECIMAL_SUFFIX_FOR[exponent]}"

    __str__ = format

    def __repr__(self) -> str:
        return f"Quantity('{self.format()}')"


def _scan(s: str) -> tuple[bool, str, str, str]:
    """(negative, numerator digits, fraction digits, suffix), scanning as
    Kubernetes' parseQuantityString does; raises QuantityError."""
    i, n = 0, len(s)
    negative = False
    if n and s[0] in "+-":
        negative = s[0] == "-"
        i = 1
    while i < n and s[i] == "0":
        i += 1
    if i == n:
        return negative, "0", "", ""
    start = i
    while i < n and s[i] in _DIGITS:
        i += 1
    num = s[start:i] or "0"
    denom = ""
    if i < n and s[i] == ".":
        i += 1
        start = i
        while i < n and s[i] in _DIGITS:
            i += 1
        denom = s[start:i]
    suffix_start = i
    while i < n and s[i] in _SUFFIX_LETTERS:
        i += 1
    if i < n and s[i] in "+-":
        i += 1
    while i < n and s[i] in _DIGITS:
        i += 1
    if i < n:
        raise QuantityError(s, FORMAT_ERROR)
    return negative, num, denom, s[suffix_start:]


def _interpret(s: str, suffix: str) -> tuple[int, int, str]:
    """(base, exponent, notation) of a suffix."""
    if suffix in _DECIMAL_SUFFIXES:
        return 10, _DECIMAL_SUFFIXES[suffix], DECIMAL_SI
    if suffix in _BINARY_SUFFIXES:
        return 2, _BINARY_SUFFIXES[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE" and _INT64.fullmatch(suffix[1:]):
        exponent = int(suffix[1:])
        if -2**63 <= exponent < 2**63:
            return 10, exponent, DECIMAL_EXPONENT
    raise QuantityError(s, SUFFIX_ERROR)


def _round_away(numerator: int, denominator: int) -> int:
    """ceil(numerator / denominator) for numerator >= 0."""
    return -(-numerator // denominator)


def _parse(s: str) -> Quantity:
    if not s:
        raise QuantityError(s, FORMAT_ERROR)
    negative, num, denom, suffix = _scan(s)
    base, exponent, notation = _interpret(s, suffix)
    digits = (num + denom).lstrip("0")
    if not digits:
        return Quantity(0, notation)
    too_large = QuantityError(s, f"too large for kubeling (more than {_MAX_DIGITS} digits)")
    if len(digits) > _MAX_DIGITS:
        raise too_large
    if base == 10:
        # value = digits * 10^shift nano-units
        shift = exponent - len(denom) + 9
        if shift >= 0:
            if len(digits) + shift > _MAX_DIGITS + 9:
                raise too_large
            nanos = int(digits) * 10**shift
        else:
            keep = len(digits) + shift  # digits left of the nano point
            if keep <= 0:
                nanos = 1  # below one nano-unit: rounds up to it
            else:
                nanos = int(digits[:keep]) + (1 if digits[keep:].strip("0") else 0)
    else:
        scaled = int(digits) << exponent  # times 10^-len(denom)
        shift = 9 - len(denom)
        nanos = scaled * 10**shift if shift >= 0 else _round_away(scaled, 10**-shift)
        nanos = min(nanos, _MAX_INT64 * _NANO)
        if nanos < _NANO:
            notation = DECIMAL_SI  # a fraction of a unit has no binary spelling
    return Quantity(-nanos if negative else nanos, notation)


def parse_quantity(value: str | int | float | Quantity) -> Quantity:
    """Parse a quantity string, or take an int or float the way a JSON or YAML
    number is read (the number's shortest spelling, e.g. 0.5 -> "500m").
    Raises QuantityError with Kubernetes' reason and the value."""
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool):
        raise QuantityError(value, "quantities must be strings or numbers")
    if isinstance(value, int):
        if abs(value) >= 10**_MAX_DIGITS:
            raise QuantityError("<large int>", f"too large for kubeling (more than {_MAX_DIGITS} digits)")
        value = str(value)
    elif isinstance(value, float):
        value = repr(value)  # "inf" and "nan" fail the syntax below
    elif not isinstance(value, str):
        raise QuantityError(value, f"quantities must be strings or numbers, not {type(value).__name__}")
    return _parse(value)


def cpu_millis(quantity: str | int | float | Quantity) -> int:
    """CPU in millicores, rounded up: "500m" -> 500, "2" -> 2000, 0.1 -> 100."""
    return parse_quantity(quantity).milli_value()


def memory_bytes(quantity: str | int | float | Quantity) -> int:
    """Bytes, rounded up: "128Mi" -> 134217728, "1G" -> 1000000000."""
    return parse_quantity(quantity).value()
