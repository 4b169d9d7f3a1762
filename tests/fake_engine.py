"""A fake engine with the runtime's interface, for front-door tests (enhance, replay) that need speed or a Ctrl-C."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import torch

from simharmon.config import load_config
from simharmon.io.pixels import quantize_like_release
from simharmon.runtime import resolve_device
from simharmon.runtime.engine import StepResult
from simharmon.runtime.inputs import used_inputs
from simharmon.runtime.stages import history_capacity


class FakeEngine:
    """What ``build_runtime`` returns, for the enhance front door: fast, and able to simulate a Ctrl-C.

    Output depends on the input and on every previous output in the stream's history (like the
    real one); the factory's rules that the front door relies on (device, weight files, configs,
    nontemporal, untrained) are the real ones.
    """

    interrupt_at = None  # raise KeyboardInterrupt on this step call (counted across instances)
    calls = 0

    def __init__(self, spec):
        resolve_device(spec.device)
        for weight in spec.resolved_weights:
            if not Path(weight).is_file():
                raise FileNotFoundError(f"weights file not found: {weight}")
        config = load_config(spec.config or "tiny")
        if spec.weights:
            config = config.replace(untrained=False)
        stream = dataclasses.replace(config.stream, history="none") if spec.nontemporal else config.stream
        self.model = SimpleNamespace(config=config)
        self.stream_config = stream
        self.weights = list(spec.resolved_weights)
        self.untrained = not spec.weights and bool(config.untrained)
        self.used_inputs = list(used_inputs(stream))
        self.reads_masks = stream.uses_mask
        self.device = torch.device("cpu")
        self._history = {}

    def describe(self):
        return "fake engine"

    def history_length(self):
        return history_capacity(self.stream_config)

    def prime(self, key, outputs, inputs=None):
        self._history[key] = [o.float() / 255 for o in outputs][-self.history_length():]

    def step_many(self, frames, inputs=None):
        results = {}
        for key, frame in frames.items():
            type(self).calls += 1
            if type(self).calls == type(self).interrupt_at:
                raise KeyboardInterrupt
            history = self._history.setdefault(key, [])
            output = 1.0 - frame.float() / 255
            for weight, previous in enumerate(reversed(history)):
                output = output * 0.7 + previous.roll(weight + 1, dims=1) * 0.3
            output = quantize_like_release(output)
            if self.history_length():
                self._history[key] = (history + [output])[-self.history_length():]
            results[key] = StepResult(output=(output * 255).round().to(torch.uint8))
        return results
