"""ZeroMQ bridge between renderers (any process, any language) and the runtime's engine.

Protocol: ``docs/PROTOCOL.md`` (implemented in :mod:`.protocol`). Server: :class:`BridgeServer`
(``simharmon serve``), in front of a :class:`FrameProcessor` (the engine from the runtime factory,
or the identity stand-in); client: :class:`BridgeClient` (``shared_memory=True``: frames through a
shared-memory segment on the same host, §9); C++ client: ``bindings/cpp`` (shared memory on POSIX).
"""

from .client import BridgeClient, BridgeError, BridgeTimeout, FrameDropped, Reply
from .config import ClientConfig, ServerConfig
from .processor import FrameProcessor, IdentityStandIn
from .protocol import PROTOCOL_VERSION, ErrorCode, Limits
from .server import BridgeServer

__all__ = [
    "BridgeClient",
    "BridgeError",
    "BridgeServer",
    "BridgeTimeout",
    "ClientConfig",
    "ErrorCode",
    "FrameDropped",
    "FrameProcessor",
    "IdentityStandIn",
    "Limits",
    "PROTOCOL_VERSION",
    "Reply",
    "ServerConfig",
]
