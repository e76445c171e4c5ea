"""make bench: figures for kubeling on this machine, in one run.

Prints one line per figure, `name: value unit`, and writes them as JSON to
tests/bench/results.json. Each benchmark starts what it measures (etcd, the
API server, ...) on loopback or in namespaces of its own and removes it
afterwards. `python -m tests.bench api scheduler` runs a subset.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")

# name -> module in tests/bench with `run(tmp_dir, report)` (plain or async).
BENCHMARKS = {
    "api": "api_bench",
    "scheduler": "scheduler_bench",
    "network": "network_bench",
    "runtime": "runtime_bench",
    "pods": "pod_startup_bench",
    "proxy": "proxy_bench",
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    figures: dict[str, dict] = {}

    def report(name: str, value: float, unit: str) -> None:
        figures[name] = {"value": round(float(value), 3), "unit": unit}
        print(f"{name}: {float(value):.3f} {unit}", flush=True)

    failed = []
    for name in chosen:
        try:
            module = importlib.import_module(f"tests.bench.{BENCHMARKS[name]}")
        except ModuleNotFoundError:
            print(f"# {name}: not built yet", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix=f"kubeling-bench-{name}-") as tmp:
            try:
                result = module.run(Path(tmp), report)
                if inspect.isawaitable(result):
                    asyncio.run(result)
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                print(f"# {name}: failed: {type(e).__name__}: {e}", flush=True)
                failed.append(name)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
