"""The CNI plugin executable: `python -m node_agent.network.cni_plugin`.

Install it in a runtime's CNI_PATH under the name of the configuration's
`type` (for example as /opt/cni/bin/kubeling, a two-line shell script that
execs this module with kubeling's Python). See `plugin.py` for the
configuration it reads.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from node_agent.network.plugin import run
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as e:
        import json
        from node_agent.network.errors import IO_FAILURE
        print(json.dumps({"cniVersion": "1.0.0", "code": IO_FAILURE, "msg": "cannot read the network configuration",
                          "details": str(e)}))
        return 1
    code, out = run(os.environ, stdin)
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
