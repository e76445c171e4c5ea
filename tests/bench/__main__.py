"""make bench: figures for the API server on this machine, in one run.

Prints one line per figure, `name: value unit`, and writes them as JSON to
tests/bench/results.json. Starts its own etcd and API server process on
loopback and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tests.bench import api_bench

RESULTS = Path(__file__).with_name("results.json")


def main() -> int:
    figures: dict[str, dict] = {}

    def report(name: str, value: float, unit: str) -> None:
        figures[name] = {"value": round(value, 3), "unit": unit}
        print(f"{name}: {value:.3f} {unit}" if isinstance(value, float) else f"{name}: {value} {unit}",
              flush=True)

    with tempfile.TemporaryDirectory(prefix="kubeling-bench-") as tmp:
        asyncio.run(api_bench.run(Path(tmp), report))
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
