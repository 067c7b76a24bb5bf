"""Compressor registry: methods register at their definition site and are built by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from compressors._core import Compressed, Grid, check_retention

Stage = Literal["pre_llm", "in_llm"]

_REGISTRY: dict[str, _Entry] = {}


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., Compressed]
    stage: Stage
    signals: tuple[str, ...]
    check: Callable[[dict[str, Any]], None] | None


def register(
    name: str,
    *,
    stage: Stage = "pre_llm",
    signals: tuple[str, ...] = (),
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Compressed]], Callable[..., Compressed]]:
    """Register `fn(video, *, grid, retention, **params, **signals) -> Compressed` as `name`.

    stage:   "pre_llm" methods run between the projector and the LLM; "in_llm" methods run at a
             decoder layer (the adapter supplies hidden states and signals).
    signals: keyword inputs the model adapter provides per call (e.g. "importance"), as opposed
             to hyper-parameters fixed at build time.
    check:   validates hyper-parameters at build time, before any model is loaded.
    """

    def wrap(fn: Callable[..., Compressed]) -> Callable[..., Compressed]:
        if name in _REGISTRY:
            raise ValueError(f"compressor {name!r} is registered twice")
        _REGISTRY[name] = _Entry(fn, stage, tuple(signals), check)
        return fn

    return wrap


def available() -> list[str]:
    """Names of every registered compressor, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown compressor {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def defaults(name: str) -> dict[str, Any]:
    """The hyper-parameters of `name` with their default values (signals excluded)."""
    entry = _entry(name)
    return {
        p.name: p.default
        for p in inspect.signature(entry.fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("grid", *entry.signals)
    }


@dataclass(frozen=True)
class Compressor:
    """A registered method bound to its hyper-parameters; call it on a video [T, N, D]."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def stage(self) -> Stage:
        return _entry(self.name).stage

    @property
    def signals(self) -> tuple[str, ...]:
        return _entry(self.name).signals

    def __call__(self, video: Tensor, grid: Grid | None = None, **signals: Any) -> Compressed:
        entry = _entry(self.name)
        missing = [s for s in entry.signals if signals.get(s) is None]
        if missing:
            raise ValueError(f"compressor {self.name!r} needs the model signal(s) {missing}")
        unknown = sorted(set(signals) - set(entry.signals))
        if unknown:
            raise ValueError(
                f"compressor {self.name!r} takes no signal(s) {unknown}; it takes {entry.signals}"
            )
        return entry.fn(video, grid=grid, **self.params, **signals)


def build(name: str, **params: Any) -> Compressor:
    """Bind `name` to hyper-parameters, validating them before any tensor is seen.

    >>> build("scc", retention=0.35)   # budget mode
    >>> build("scc", tau=0.9)          # the paper's threshold mode
    """
    entry = _entry(name)
    accepted = defaults(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"compressor {name!r} has no parameter(s) {unknown}; it accepts {sorted(accepted)}"
        )
    if params.get("retention") is not None:
        params["retention"] = check_retention(params["retention"])
    if entry.check is not None:
        entry.check({**accepted, **params})
    return Compressor(name, params)
