"""Hollow nodes (kubemark-like): many simulated node agents in one process,
to test and benchmark the control plane at scale with no containers.

`python -m node_agent.hollow --count N` (or `kubeling hollow-nodes --count N`)
runs them; see `hollow_node` for what a hollow node does and does not do.
"""

from .hollow_node import HollowConfig, HollowNode, HollowNodes, PodIPAllocator

__all__ = ["HollowConfig", "HollowNode", "HollowNodes", "PodIPAllocator"]
