"""Waiting for a condition in tests, without asserting how long it took."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

import pytest

DEFAULT_TIMEOUT = 30.0


async def eventually(check: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT,
                     interval: float = 0.1, what: str = "") -> Any:
    """Call `check()` (plain or async) until it returns something truthy and
    return that; fail the test, naming `what` and the last value, after `timeout`."""
    last = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = check()
                if inspect.isawaitable(last):
                    last = await last
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout:.0f}s waiting for "
                    f"{what or getattr(check, '__name__', 'a condition')} (last: {last!r})")
