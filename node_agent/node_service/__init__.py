"""The node agent's Node service (kubeling.node.v1): container logs and exec
over CRI, relayed to users by the API server. Start it with
`start_node_service` (see server.py)."""

from .server import NodeService, NodeServiceError, RunningNodeService, start_node_service

__all__ = ["NodeService", "NodeServiceError", "RunningNodeService", "start_node_service"]
