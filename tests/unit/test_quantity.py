"""Resource quantities: parsing, exact values, rounding, canonical form, arithmetic."""

from fractions import Fraction

import pytest

from kubeling.quantity import (
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    FORMAT_ERROR,
    SUFFIX_ERROR,
    Quantity,
    QuantityError,
    cpu_millis,
    memory_bytes,
    parse_quantity,
)


@pytest.mark.parametrize("text,value,notation", [
    ("0", 0, DECIMAL_SI),
    ("0m", 0, DECIMAL_SI),
    ("0Ki", 0, BINARY_SI),
    ("1", 1, DECIMAL_SI),
    ("500m", Fraction(1, 2), DECIMAL_SI),
    ("0.5", Fraction(1, 2), DECIMAL_SI),
    ("5n", Fraction(5, 10**9), DECIMAL_SI),
    ("4u", Fraction(4, 10**6), DECIMAL_SI),
    ("8k", 8000, DECIMAL_SI),
    ("7M", 7 * 10**6, DECIMAL_SI),
    ("1G", 10**9, DECIMAL_SI),
    ("5T", 5 * 10**12, DECIMAL_SI),
    ("2P", 2 * 10**15, DECIMAL_SI),
    ("1E", 10**18, DECIMAL_SI),
    ("1Ki", 1024, BINARY_SI),
    ("128Mi", 128 * 2**20, BINARY_SI),
    ("1Gi", 2**30, BINARY_SI),
    ("5Ti", 5 * 2**40, BINARY_SI),
    ("4Pi", 4 * 2**50, BINARY_SI),
    ("3Ei", 3 * 2**60, BINARY_SI),
    ("1.5Gi", 3 * 2**29, BINARY_SI),
    ("100.035Ki", Fraction(10243584, 100), BINARY_SI),
    ("1e3", 1000, DECIMAL_EXPONENT),
    ("1E6", 10**6, DECIMAL_EXPONENT),
    ("1E-3", Fraction(1, 1000), DECIMAL_EXPONENT),
    ("1.3E+6", 1300000, DECIMAL_EXPONENT),
    ("0.5e-1", Fraction(5, 100), DECIMAL_EXPONENT),
    ("100.035k", 100035, DECIMAL_SI),
    ("6.987654321G", 6987654321, DECIMAL_SI),
    ("+1", 1, DECIMAL_SI),
    ("-1.5", Fraction(-3, 2), DECIMAL_SI),
    ("-128Mi", -128 * 2**20, BINARY_SI),
    ("007", 7, DECIMAL_SI),
    (".001", Fraction(1, 1000), DECIMAL_SI),
    ("1.", 1, DECIMAL_SI),
    ("1.G", 10**9, DECIMAL_SI),
    (".", 0, DECIMAL_SI),
    ("-", 0, DECIMAL_SI),
    ("10000000000000000000", 10**19, DECIMAL_SI),
], ids=["zero", "zero-milli", "zero-binary", "one", "milli", "decimal-fraction", "nano", "micro", "kilo",
        "mega", "giga", "tera", "peta", "exa", "kibi", "mebi", "gibi", "tebi", "pebi", "exbi",
        "fractional-binary", "fractional-kibi", "exponent", "capital-exponent", "negative-exponent",
        "plus-exponent", "fraction-with-exponent", "fractional-kilo", "fractional-giga", "plus-sign",
        "negative", "negative-binary", "leading-zeros", "leading-dot", "trailing-dot", "trailing-dot-suffix",
        "dot-alone-is-zero", "minus-alone-is-zero", "beyond-int64"])
def test_parse_gives_exact_value_and_notation(text, value, notation):
    q = parse_quantity(text)
    assert q.as_fraction() == value
    assert q.notation == notation


@pytest.mark.parametrize("text,value", [
    ("3.001n", Fraction(4, 10**9)),
    ("0.0000000001", Fraction(1, 10**9)),
    ("0.5e-9", Fraction(1, 10**9)),
    ("0.00000012345", Fraction(124, 10**9)),
    ("-0.00000012345", Fraction(-124, 10**9)),
    ("1e-99999999999", Fraction(1, 10**9)),
    ("9Ei", 2**63 - 1),
    ("9223372036854775807Ki", 2**63 - 1),
    ("-9Ei", -(2**63 - 1)),
], ids=["nano-rounds-up", "tiny-rounds-up-to-nano", "tiny-exponent", "rounds-at-nano",
        "negative-rounds-away-from-zero", "huge-negative-exponent", "binary-capped", "binary-capped-kibi",
        "negative-binary-capped"])
def test_parse_rounds_to_nano_and_caps_binary(text, value):
    assert parse_quantity(text).as_fraction() == value


def test_a_binary_fraction_of_one_becomes_decimal():
    q = parse_quantity("0.000000000001Ki")
    assert (q.as_fraction(), q.notation, str(q)) == (Fraction(2, 10**9), DECIMAL_SI, "2n")


@pytest.mark.parametrize("text,reason", [
    ("", FORMAT_ERROR),
    ("aoeu", FORMAT_ERROR),
    ("1.1.M", FORMAT_ERROR),
    ("1+1.0M", FORMAT_ERROR),
    (" 1", FORMAT_ERROR),
    ("1 ", FORMAT_ERROR),
    ("1e3.5", FORMAT_ERROR),
    ("1,5", FORMAT_ERROR),
    ("١", FORMAT_ERROR),
    ("0.1mi", SUFFIX_ERROR),
    ("0.1am", FORMAT_ERROR),
    (".5i", SUFFIX_ERROR),
    ("1i", SUFFIX_ERROR),
    ("-3.01e-", SUFFIX_ERROR),
    ("1e", SUFFIX_ERROR),
    ("1KB", FORMAT_ERROR),
    ("1kb", FORMAT_ERROR),
    ("1mm", SUFFIX_ERROR),
    ("1ee3", SUFFIX_ERROR),
    ("1e99999999999999999999", SUFFIX_ERROR),
], ids=["empty", "letters", "two-dots", "sign-inside", "leading-space", "trailing-space",
        "fractional-exponent", "comma", "non-ascii-digit", "bad-binary-suffix", "unknown-letter",
        "i-alone-after-fraction", "i-alone", "exponent-without-digits", "e-alone", "kilobytes-upper",
        "kilobytes-lower", "double-suffix", "double-e", "exponent-overflows-int64"])
def test_parse_rejects_with_kubernetes_reason(text, reason):
    with pytest.raises(QuantityError) as err:
        parse_quantity(text)
    assert str(err.value) == f'invalid quantity "{text}": {reason}'
    assert err.value.value == text
    assert isinstance(err.value, ValueError)


def test_format_error_quotes_kubernetes_regular_expression():
    assert FORMAT_ERROR == ("quantities must match the regular expression "
                            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


@pytest.mark.parametrize("value", ["1e1000", "1" * 1001, 10**1000, "0." + "1" * 1001],
                         ids=["huge-exponent", "too-many-digits", "huge-int", "too-many-fraction-digits"])
def test_absurd_sizes_are_rejected_not_computed(value):
    with pytest.raises(QuantityError, match="too large"):
        parse_quantity(value)


@pytest.mark.parametrize("value,canonical", [
    (0.5, "500m"),
    (2, "2"),
    (0.1, "100m"),
    (1e20, "100e18"),
    (-0.0, "0"),
    (134217728, "134217728"),
], ids=["float-half", "int", "float-tenth", "float-with-exponent", "negative-zero", "bytes-int"])
def test_parse_reads_numbers_as_json_numbers(value, canonical):
    assert str(parse_quantity(value)) == canonical


@pytest.mark.parametrize("value", [True, None, float("inf"), float("nan"), ["1"]],
                         ids=["bool", "none", "inf", "nan", "list"])
def test_parse_rejects_non_quantities(value):
    with pytest.raises(QuantityError):
        parse_quantity(value)


@pytest.mark.parametrize("text,canonical", [
    ("0.5", "500m"),
    ("1000m", "1"),
    ("1024Mi", "1Gi"),
    ("1Gi", "1Gi"),
    ("1.5Gi", "1536Mi"),
    ("300Mi", "300Mi"),
    ("307200Ki", "300Mi"),
    ("1001Gi", "1001Gi"),
    ("6Ki", "6Ki"),
    ("1025Ki", "1025Ki"),
    ("1025", "1025"),
    ("1000M", "1G"),
    ("0.001T", "1G"),
    ("1000000000", "1G"),
    ("1000u", "1m"),
    ("1.08", "1080m"),
    ("1080000000n", "1080m"),
    ("50k", "50k"),
    ("1234567M", "1234567M"),
    ("0.0005k", "500m"),
    (".001Ki", "1024m"),
    (".000001Ki", "1024u"),
    (".000000001Ki", "1024n"),
    ("0.5Ki", "512"),
    ("1Ki", "1Ki"),
    ("0.05Gi", "53687091200m"),
    ("1e3", "1e3"),
    ("1000e0", "1e3"),
    (".001e12", "1e9"),
    ("0.001e0", "1e-3"),
    ("1000e-12", "1e-9"),
    ("80e-3", "80e-3"),
    ("1.5e3", "1500"),
    ("00", "0"),
    ("-0.5", "-500m"),
    ("-1024Mi", "-1Gi"),
    ("1E", "1E"),
    ("1000000000000000000", "1E"),
    ("10000000000000000000000m", "10E"),
    ("9999999999999999999.1", "9999999999999999999100m"),
    ("1000E", "1000E"),
    ("9Ei", "9223372036854775807"),
], ids=["half", "thousand-milli", "mebi-to-gibi", "gibi", "fractional-gibi", "mebi", "kibi-to-mebi",
        "not-a-power", "small-kibi", "odd-kibi", "binary-below-kibi-is-decimal", "mega-to-giga",
        "fractional-tera", "plain-billion", "micro-to-milli", "fraction-to-milli", "nano-to-milli",
        "kilo", "mega-stays", "fractional-kilo", "binary-fraction-milli", "binary-fraction-micro",
        "binary-fraction-nano", "half-kibi-below-1024", "kibi-stays", "binary-non-integer-is-decimal",
        "exponent", "exponent-normalised", "fractional-exponent", "negative-exponent",
        "nano-exponent", "milli-exponent", "exponent-zero-omitted", "double-zero", "negative-milli",
        "negative-binary", "exa", "exa-spelled-out", "exa-from-milli", "large-with-fraction",
        "beyond-exa-keeps-suffix", "binary-cap"])
def test_format_is_kubernetes_canonical_form(text, canonical):
    q = parse_quantity(text)
    assert q.format() == canonical == str(q)
    assert parse_quantity(canonical) == q


@pytest.mark.parametrize("text,milli,value", [
    ("500m", 500, 1),
    ("0.1", 100, 1),
    ("1", 1000, 1),
    ("2", 2000, 2),
    ("1.5", 1500, 2),
    ("1n", 1, 1),
    ("1500u", 2, 1),
    ("128Mi", 128 * 2**20 * 1000, 128 * 2**20),
    ("0", 0, 0),
    ("-1.5", -1500, -2),
    ("-1n", -1, -1),
], ids=["half-cpu", "tenth", "one", "two", "one-and-a-half", "nano-rounds-up", "micro-rounds-up",
        "mebibytes", "zero", "negative", "negative-nano-rounds-away"])
def test_milli_value_and_value_round_up(text, milli, value):
    q = parse_quantity(text)
    assert (q.milli_value(), q.value()) == (milli, value)


@pytest.mark.parametrize("a,b,total,notation", [
    ("500m", "1500m", "2", DECIMAL_SI),
    ("1Gi", "512Mi", "1536Mi", BINARY_SI),
    ("0", "1Gi", "1Gi", BINARY_SI),
    ("0Ki", "100m", "100m", DECIMAL_SI),
    ("1", "1Ki", "1025", DECIMAL_SI),
    ("1e3", "1", "1001", DECIMAL_EXPONENT),
], ids=["cpu", "memory", "zero-takes-other-notation", "zero-binary-takes-decimal", "keeps-left-notation",
        "keeps-exponent-notation"])
def test_addition_is_exact_and_keeps_the_left_notation(a, b, total, notation):
    result = parse_quantity(a) + parse_quantity(b)
    assert str(result) == total
    assert result.notation == notation


def test_subtraction_negation_and_multiplication():
    assert str(parse_quantity("1Gi") - parse_quantity("512Mi")) == "512Mi"
    assert str(parse_quantity("1") - parse_quantity("1500m")) == "-500m"
    assert str(-parse_quantity("901e-2")) == "-9010e-3"
    assert str(parse_quantity("250m") * 4) == "1"
    assert str(3 * parse_quantity("1Gi")) == "3Gi"


@pytest.mark.parametrize("a,b,order", [
    ("1", "1000m", 0),
    ("1Gi", "1073741824", 0),
    ("1G", "1Gi", -1),
    ("500m", "0.4", 1),
    ("-1", "0", -1),
    ("1E", "1Ei", -1),
], ids=["same-value-different-spelling", "binary-equals-decimal", "giga-less-than-gibi", "greater",
        "negative", "exa-vs-exbi"])
def test_comparison_is_by_value(a, b, order):
    qa, qb = parse_quantity(a), parse_quantity(b)
    assert ((qa > qb) - (qa < qb)) == order
    assert (qa == qb) is (order == 0)
    if order == 0:
        assert hash(qa) == hash(qb)


def test_quantities_sum_with_builtin_sum():
    requests = [parse_quantity(s) for s in ("100m", "250m", "0.65")]
    assert sum(requests, Quantity()) == parse_quantity("1")


def test_constructors():
    assert str(Quantity.from_int(16 * 2**30, BINARY_SI)) == "16Gi"
    assert str(Quantity.from_milli(1500)) == "1500m"
    assert repr(parse_quantity("0.5")) == "Quantity('500m')"
    assert not Quantity() and Quantity().is_zero() and parse_quantity("1n")
    with pytest.raises(ValueError):
        Quantity(1, "Bogus")


@pytest.mark.parametrize("value,millis", [("500m", 500), ("2", 2000), (0.1, 100), (1, 1000), ("1n", 1)],
                         ids=["milli", "cores", "float", "int", "rounds-up"])
def test_cpu_millis(value, millis):
    assert cpu_millis(value) == millis


@pytest.mark.parametrize("value,size", [("128Mi", 134217728), ("1G", 10**9), ("1.5Ki", 1536), (1024, 1024),
                                        ("0.5", 1)],
                         ids=["mebi", "giga", "fractional-kibi", "int", "fraction-rounds-up"])
def test_memory_bytes(value, size):
    assert memory_bytes(value) == size
