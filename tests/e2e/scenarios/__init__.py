"""`make e2e`: the promises of the seed documents, checked on one real local
cluster (`kubeling up --nodes 3`) the way its users drive it.

- `test_scenarios.py`: the scenarios, in order, one test each.
- `harness.py`: the cluster a test run brings up and tears down, the CLI
  and gRPC API as a user reaches them, and what an operator does on the
  machine (kill a container's process, a node, the control plane; start
  them again).
- `manifests.py`: the YAML a user applies.
"""
