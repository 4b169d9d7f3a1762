"""Server counters and latency windows (thread-safe; both server threads update them)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any, Dict, Iterable

__all__ = ["ServerStats", "percentiles"]


def percentiles(values: Iterable[float], points=(50, 90, 99)) -> Dict[str, float]:
    """Nearest-rank percentiles plus max of ``values`` (empty -> empty dict)."""
    ordered = sorted(values)
    if not ordered:
        return {}
    out = {f"p{p}": ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]
           for p in points}
    out["max"] = ordered[-1]
    return out


class ServerStats:
    """Counters since start plus the latencies of the last ``window`` replies."""

    def __init__(self, window: int = 2048):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.counts: Counter = Counter()
        self.dropped: Counter = Counter()
        self.errors: Counter = Counter()
        self.latency_ms: deque = deque(maxlen=window)
        self.engine_ms: deque = deque(maxlen=window)
        self.batch_sizes: deque = deque(maxlen=window)
        self.queued_max = 0
        self._last_log = (time.monotonic(), 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def drop(self, reason: str, amount: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += amount

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def queued(self, now_queued: int) -> None:
        with self._lock:
            self.queued_max = max(self.queued_max, now_queued)

    def batch(self, size: int, engine_ms: float, latencies_ms: Iterable[float]) -> None:
        with self._lock:
            self.counts["frames_out"] += size
            self.batch_sizes.append(size)
            self.engine_ms.append(engine_ms)
            self.latency_ms.extend(latencies_ms)

    def snapshot(self) -> Dict[str, Any]:
        """A msgpack-friendly dict of everything (see docs/PROTOCOL.md, ``stats`` reply)."""
        with self._lock:
            now = time.monotonic()
            last_time, last_out = self._last_log
            frames_out = self.counts["frames_out"]
            span = max(now - last_time, 1e-9)
            return {
                "uptime_s": round(now - self.started, 3),
                "counts": dict(self.counts),
                "dropped": dict(self.dropped),
                "errors": dict(self.errors),
                "queued_max": self.queued_max,
                "latency_ms": {k: round(v, 3) for k, v in percentiles(self.latency_ms).items()},
                "engine_ms": {k: round(v, 3) for k, v in percentiles(self.engine_ms).items()},
                "batch_mean": round(sum(self.batch_sizes) / len(self.batch_sizes), 3) if self.batch_sizes else 0.0,
                "fps_out_recent": round((frames_out - last_out) / span, 2),
            }

    def mark_logged(self) -> None:
        """Start a new interval for ``fps_out_recent``."""
        with self._lock:
            self._last_log = (time.monotonic(), self.counts["frames_out"])
