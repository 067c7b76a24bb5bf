"""Visual-token compressors for video LLMs: pure tensor functions, registered by name.

>>> import compressors
>>> c = compressors.build("scc", retention=0.35)
>>> out = c(video)            # video [T, N, D] -> out.tokens [M, D], out.assignment [T*N]
>>> compressors.available()
"""

from compressors._core import Compressed, budget, merge_into
from compressors.registry import Compressor, available, budgeted, build, defaults, register

# Importing the method modules fills the registry (one file per method).
from compressors import (  # noqa: E402,F401  isort: skip
    fastv,
    l2norm,
    none,
    pllava,
    random,
    scc,
    scc_official,
    uniform,
    visionzip,
)

__all__ = [
    "Compressed",
    "Compressor",
    "available",
    "budget",
    "budgeted",
    "build",
    "defaults",
    "merge_into",
    "register",
]
