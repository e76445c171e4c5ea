"""IntOrString values (maxSurge, maxUnavailable, ...), as
k8s.io/apimachinery/pkg/util/intstr and the deployment controller's fenceposts.

An IntOrString is an int (an absolute number) or a percent string such as
"25%". A string without '%' is an error, as in Kubernetes'
GetScaledValueFromIntOrPercent. Arithmetic is exact integer arithmetic.
"""

from __future__ import annotations

import re

_PERCENT = re.compile(r"([+-]?[0-9]+)%")  # Go's strconv.Atoi before the '%'


def scaled_value(value: int | str, total: int, round_up: bool) -> int:
    """`value` itself when it is an int; for "N%", N percent of `total`,
    rounded up (ceil) or down (floor). Raises ValueError for any other value,
    naming it: "5" (no '%'), "x%", "", a bool or None."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid value for IntOrString: {value!r} is neither an int nor a percentage")
    if isinstance(value, int):
        return value
    if not value.endswith("%"):
        raise ValueError(f"invalid value for IntOrString: {value!r} is not a percentage (e.g. '25%')")
    m = _PERCENT.fullmatch(value)
    if not m:
        raise ValueError(f"invalid value for IntOrString: {value!r} is not a whole-number percentage (e.g. '25%')")
    percent = int(m.group(1))
    if round_up:
        return -(-percent * total // 100)
    return percent * total // 100


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) for a rolling update of `desired` replicas, as
    Kubernetes' ResolveFenceposts: maxSurge rounds up, maxUnavailable rounds
    down, None counts as 0, and when both come out 0, unavailable is 1 so the
    rollout can progress. Raises ValueError for a bad value."""
    surge = scaled_value(0 if max_surge is None else max_surge, desired, round_up=True)
    unavailable = scaled_value(0 if max_unavailable is None else max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        # Validation forbids both being 0, but rounding unavailable down can get there.
        unavailable = 1
    return surge, unavailable
