"""ZeroMQ bridge between renderers (any process, any language) and the enhancer.

Protocol: ``docs/PROTOCOL.md`` (implemented in :mod:`.protocol`). Server: :class:`BridgeServer`
(``simharmon serve``); client: :class:`BridgeClient` (``shared_memory=True``: frames through a
shared-memory segment on the same host, §9); C++ client: ``bindings/cpp`` (shared memory on POSIX).
Names are imported lazily so ``import simharmon.cli`` does not pull in ZeroMQ.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BridgeServer": ".server",
    "BridgeClient": ".client",
    "BridgeError": ".client",
    "BridgeTimeout": ".client",
    "FrameDropped": ".client",
    "Reply": ".client",
    "ServerConfig": ".config",
    "ClientConfig": ".config",
    "Limits": ".protocol",
    "PROTOCOL_VERSION": ".protocol",
    "ErrorCode": ".protocol",
    "Engine": ".engines",
    "ModelEngine": ".engines",
    "IdentityEngine": ".engines",
    "build_engine": ".engines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
