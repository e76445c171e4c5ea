"""IntOrString scaling and the rolling update fenceposts."""

import pytest

from kubeling.intstr import resolve_fenceposts, scaled_value


@pytest.mark.parametrize("value,total,round_up,expected", [
    (3, 10, True, 3),
    (3, 10, False, 3),
    (0, 10, True, 0),
    (15, 10, True, 15),
    ("25%", 10, True, 3),
    ("25%", 10, False, 2),
    ("25%", 4, True, 1),
    ("25%", 4, False, 1),
    ("50%", 3, True, 2),
    ("50%", 3, False, 1),
    ("100%", 7, False, 7),
    ("0%", 7, True, 0),
    ("1%", 1, True, 1),
    ("1%", 1, False, 0),
    ("33%", 3, True, 1),
    ("33%", 3, False, 0),
    ("150%", 2, True, 3),
    ("25%", 0, True, 0),
    ("+10%", 10, True, 1),
    ("-10%", 15, True, -1),
    ("-10%", 15, False, -2),
], ids=["int-up", "int-down", "int-zero", "int-above-total", "quarter-up", "quarter-down", "exact-up",
        "exact-down", "half-of-odd-up", "half-of-odd-down", "all", "none", "tiny-up", "tiny-down",
        "thirty-three-up", "thirty-three-down", "above-hundred", "zero-total", "plus-sign",
        "negative-up-is-ceil", "negative-down-is-floor"])
def test_scaled_value(value, total, round_up, expected):
    assert scaled_value(value, total, round_up) == expected


@pytest.mark.parametrize("value,message", [
    ("5", "'5' is not a percentage"),
    ("", "'' is not a percentage"),
    ("%", "'%' is not a whole-number percentage"),
    ("2.5%", "'2.5%' is not a whole-number percentage"),
    ("x%", "'x%' is not a whole-number percentage"),
    (" 5%", "' 5%' is not a whole-number percentage"),
    ("5 %", "'5 %' is not a whole-number percentage"),
    ("1_0%", "'1_0%' is not a whole-number percentage"),
    (None, "None is neither an int nor a percentage"),
    (True, "True is neither an int nor a percentage"),
    (2.5, "2.5 is neither an int nor a percentage"),
], ids=["number-string", "empty", "percent-alone", "fractional", "letters", "leading-space",
        "space-before-percent", "underscore", "none", "bool", "float"])
def test_scaled_value_rejects_bad_values(value, message):
    with pytest.raises(ValueError) as err:
        scaled_value(value, 10, True)
    assert str(err.value).startswith(f"invalid value for IntOrString: {message}")


@pytest.mark.parametrize("max_surge,max_unavailable,desired,expected", [
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    (1, 0, 3, (1, 0)),
    (0, 1, 3, (0, 1)),
    (0, "10%", 5, (0, 1)),
    (0, "10%", 20, (0, 2)),
    ("0%", "0%", 10, (0, 1)),
    (None, None, 3, (0, 1)),
    (2, None, 3, (2, 0)),
    ("100%", 0, 3, (3, 0)),
    ("25%", "25%", 0, (0, 1)),
], ids=["default-ten", "default-four", "default-one-surge-rounds-up", "surge-only", "unavailable-only",
        "unavailable-rounds-down-to-zero-then-one", "unavailable-percent", "both-zero-percent",
        "both-missing", "unavailable-missing", "full-surge", "zero-replicas"])
def test_resolve_fenceposts(max_surge, max_unavailable, desired, expected):
    assert resolve_fenceposts(max_surge, max_unavailable, desired) == expected


def test_resolve_fenceposts_rejects_bad_values():
    with pytest.raises(ValueError, match="'5' is not a percentage"):
        resolve_fenceposts("5", 0, 3)
