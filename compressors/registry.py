"""Compressor registry: methods register at their definition site and are built by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_retention

Stage = Literal["pre_llm", "in_llm"]
Fidelity = Literal["official", "port", "variant", "baseline"]
FIDELITIES: tuple[str, ...] = ("official", "port", "variant", "baseline")


@dataclass(frozen=True)
class Reference:
    """Where a method's code comes from: the official repository, the commit whose code it
    follows, the file that holds the method there, and the paper that introduced it."""

    repo: str
    commit: str
    file: str
    note: str = ""
    paper: str = ""  # "arXiv:<id>, <title> (<venue>)"

    def __post_init__(self) -> None:
        if self.repo.count("/") != 1 or ":" in self.repo or len(self.commit) != 40:
            raise ValueError(f"a Reference names a GitHub 'owner/name' and a 40-digit commit, "
                             f"got {self.repo!r} @ {self.commit!r}")

    @property
    def url(self) -> str:
        """The file at that commit on GitHub."""
        return f"https://github.com/{self.repo}/blob/{self.commit}/{self.file}"

_REGISTRY: dict[str, _Entry] = {}


Count = Callable[[int, tuple[int, int], dict[str, Any]], "int | None"]


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., Compressed]
    stage: Stage
    signals: tuple[str, ...]
    check: Callable[[dict[str, Any]], None] | None
    count: Count | None
    has_budget: bool
    reference: Reference | None
    fidelity: Fidelity


def register(
    name: str,
    *,
    stage: Stage = "pre_llm",
    signals: tuple[str, ...] = (),
    check: Callable[[dict[str, Any]], None] | None = None,
    count: Count | None = None,
    has_budget: bool = True,
    reference: Reference | None = None,
    fidelity: Fidelity = "baseline",
) -> Callable[[Callable[..., Compressed]], Callable[..., Compressed]]:
    """Register `fn(video, *, grid, retention, **params, **signals) -> Compressed` as `name`.

    stage:   "pre_llm" methods run between the projector and the LLM; "in_llm" methods run at a
             decoder layer (the adapter supplies hidden states and signals).
    signals: keyword inputs the model adapter provides per call (e.g. "importance"), as opposed
             to hyper-parameters fixed at build time.
    check:   validates hyper-parameters at build time, before any model is loaded.
    count:   `count(frames, (H, W), params)`: the tokens the method hands on for that geometry
             when it is not the budget M (PLLaVA's pooled grid); None where it depends on the
             video. Without it: M when a retention is set, else unknown (threshold mode).
    has_budget: False for a method with no budget mode (threshold only, e.g. `scc_official`):
             it takes no retention, and retention sweeps (`budgeted()`) leave it out.
    reference: the official code the method follows (repository, commit, file).
    fidelity: "official" (follows the official code for this setting), "port" (official code
             exists only for another backbone; `reference.note` says which), "variant" (a
             documented departure from the official code) or "baseline" (no official code:
             a plain baseline such as uniform or random).
    """
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity of {name!r} must be one of {FIDELITIES}, got {fidelity!r}")
    if fidelity != "baseline" and reference is None:
        raise ValueError(f"compressor {name!r} claims fidelity {fidelity!r} but names no reference")

    def wrap(fn: Callable[..., Compressed]) -> Callable[..., Compressed]:
        if name in _REGISTRY:
            raise ValueError(f"compressor {name!r} is registered twice")
        _REGISTRY[name] = _Entry(fn, stage, tuple(signals), check, count, has_budget,
                                 reference, fidelity)
        return fn

    return wrap


def available() -> list[str]:
    """Names of every registered compressor, sorted."""
    return sorted(_REGISTRY)


def budgeted() -> list[str]:
    """Names of the methods a retention r < 1 applies to (not `none`, not threshold-only
    methods), sorted: what a retention sweep runs."""
    return [n for n, entry in sorted(_REGISTRY.items()) if entry.has_budget and n != "none"]


def provenance(name: str) -> dict[str, str]:
    """What `name` follows: {fidelity, repo, commit, file, note, url, paper} (empty where
    none)."""
    entry = _entry(name)
    ref = entry.reference
    if ref is None:
        return {"fidelity": entry.fidelity, "repo": "", "commit": "", "file": "", "note": "",
                "url": "", "paper": ""}
    return {"fidelity": entry.fidelity, "repo": ref.repo, "commit": ref.commit,
            "file": ref.file, "note": ref.note, "url": ref.url, "paper": ref.paper}


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

    def expected_tokens(self, frames: int, grid: tuple[int, int]) -> int | None:
        """Visual tokens this method hands on for `frames` frames of an (H, W) grid: fed to
        the LLM (pre-LLM methods) or kept from layer K on (in-LLM); None when the count depends
        on the video (threshold mode). The analytic FLOPs use it, so a method that does not
        fill its budget is not costed as if it did."""
        entry = _entry(self.name)
        params = {**defaults(self.name), **self.params}
        if entry.count is not None:
            return entry.count(frames, grid, params)
        retention = params.get("retention")
        return None if retention is None else budget(retention, frames * grid[0] * grid[1])

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
