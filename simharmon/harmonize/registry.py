"""The registry of harmonization methods: names, summaries and where their builders live.

Light on purpose (no torch / diffusers import): the CLI lists the methods from here, and a
method's builder module is imported only when that method is built. A builder is
``"module:function"`` taking :class:`~simharmon.harmonize.methods.MethodOptions` and returning a
:class:`~simharmon.harmonize.methods.Harmonizer`. Part 2's methods add one line each below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict

__all__ = ["Method", "METHODS", "register_method", "resolve_builder"]


@dataclass(frozen=True)
class Method:
    """A registered method: its name, one-line summary, builder path and whether it takes weights."""

    name: str
    summary: str
    builder: str
    uses_weights: bool = True


METHODS: Dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (names are unique)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    if ":" not in method.builder:
        raise ValueError(f"builder must be 'module:function', got {method.builder!r}")
    METHODS[method.name] = method
    return method


def resolve_builder(name: str):
    """The builder function of the registered method ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    module, function = METHODS[name].builder.split(":")
    return getattr(importlib.import_module(module), function)


_METHODS = "simharmon.harmonize.methods"
register_method(Method("diffharmony", "DiffHarmony: latent diffusion (9-channel UNet), Euler-ancestral, plain VAE decoder",
                       f"{_METHODS}:build_diffharmony"))
register_method(Method("diffharmony++", "DiffHarmony++: DiffHarmony with the Harmony-VAE decoder",
                       f"{_METHODS}:build_diffharmony_pp"))
register_method(Method("reinhard", "Reinhard colour transfer in Lab (baseline, no weights)",
                       f"{_METHODS}:build_reinhard", uses_weights=False))
