"""FleetProcessor's failover logic against a fake deployment handle (no Ray cluster)."""

import numpy as np
import torch

from simharmon.fleet.ingress import FleetProcessor

INFO = {"name": "fake", "untrained": True, "stand_in": True, "used_inputs": [], "pixel_multiple": 16,
        "max_width": 64, "max_height": 64, "replica": "r0"}


class _Response:
    def __init__(self, value):
        self.value = value

    def result(self, timeout_s=None):
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


class _Method:
    def __init__(self, handle, name):
        self.handle, self.name = handle, name

    def remote(self, *args):
        self.handle.calls.append((self.name, self.handle.model_id, args))
        return _Response(self.handle.answer(self.name, args))


class FakeHandle:
    """Answers ``step`` from ``script`` (a list of exceptions or replica ids, consumed in order)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = []
        self.model_id = None

    def options(self, multiplexed_model_id=None):
        self.model_id = multiplexed_model_id
        return self

    def __getattr__(self, name):
        return _Method(self, name)

    def answer(self, name, args):
        if name == "info":
            return INFO
        if name == "remove":
            return True
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            return outcome
        frame, _, seq = args
        return {"output": np.asarray(frame) + 0, "passthrough": None, "history_reset": False, "error": None,
                "replica": outcome}


def _frame():
    return torch.zeros(1, 3, 16, 16)


def test_a_failed_replica_call_is_sent_again_and_flagged_reset():
    handle = FakeHandle(["r1", RuntimeError("replica died"), "r2"])
    processor = FleetProcessor(handle, request_timeout_s=1, failover_timeout_s=5)
    first = processor.step_many({"s": _frame()})["s"]
    assert first.error is None and not first.history_reset
    second = processor.step_many({"s": _frame()})["s"]
    assert second.error is None and second.history_reset and isinstance(second.output, torch.Tensor)
    assert processor.failovers == 1 and processor.replica_of["s"] == "r2"
    assert processor.replica_counts["s"] == {"r1": 1, "r2": 1}
    steps = [c for c in handle.calls if c[0] == "step"]
    assert [c[2][2] for c in steps] == [0, 1, 1] and all(c[1] == "s" for c in steps)  # same seq re-sent


def test_no_replica_in_time_gives_an_error_result_not_a_hang():
    handle = FakeHandle([RuntimeError("down")] * 100)
    processor = FleetProcessor(handle, request_timeout_s=1, failover_timeout_s=0.5)
    result = processor.step_many({"s": _frame()})["s"]
    assert result.output is None and "no engine replica answered" in result.error and result.history_reset


def test_stream_bound_and_remove():
    processor = FleetProcessor(FakeHandle(["r1", "r1"]), max_streams=1)
    results = processor.step_many({"a": _frame(), "b": _frame()})
    assert results["a"].error is None and "too many streams" in results["b"].error
    processor.remove("a")
    assert processor.keys() == [] and processor.step_many({"b": _frame()})["b"].error is None
