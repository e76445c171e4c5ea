"""A client in another language: Node.js with @grpc/grpc-js loads protos/ directly."""

import os
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def test_node_client_creates_reads_and_watches(api_server):
    assert shutil.which("node"), "node is required (make install installs it)"
    assert (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "run `make node-deps` (make test does) to install the Node.js test client"
    result = subprocess.run(["node", "--test", "api.test.mjs"], cwd=NODE_DIR,
                            env=dict(os.environ, KUBELING_API=api_server.address),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
