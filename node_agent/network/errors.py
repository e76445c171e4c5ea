"""CNI errors: the well-known codes of the CNI specification and kubeling's own.

Every failure the network code reports is a `CniError`; the gRPC servicer
and the plugin binary turn it into the CNI error shape (code, msg, details)
in one place each. Codes 0-99 are the specification's; 100 and up are ours.
"""

from __future__ import annotations

INCOMPATIBLE_CNI_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT_VARIABLES = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY = 51
# kubeling: a link, address, route or nftables operation failed, or Check
# found live state that differs from the recorded result.
INTERFACE_FAILURE = 100


class CniError(Exception):
    """A failure with a CNI error code, a short message and optional details."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict:
        """The CNI error result object."""
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
