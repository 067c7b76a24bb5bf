"""Visual-token compressors for video LLMs: pure tensor functions, registered by name.

>>> import compressors
>>> c = compressors.build("scc", retention=0.35)
>>> out = c(video)            # video [T, N, D] -> out.tokens [M, D], out.assignment [T*N]
>>> compressors.available()
"""

from compressors._core import Compressed, budget, merge_into
from compressors.registry import (
    Compressor,
    Reference,
    available,
    budgeted,
    build,
    defaults,
    provenance,
    register,
)

# Importing the method modules fills the registry (one file per method).
from compressors import (  # noqa: E402,F401  isort: skip
    dycoke,
    fastv,
    fastvid,
    holitom,
    l2norm,
    none,
    pllava,
    prunevid,
    random,
    scc,
    scc_official,
    uniform,
    vidcom2,
    visionzip,
)

__all__ = [
    "Compressed",
    "Compressor",
    "Reference",
    "available",
    "budget",
    "budgeted",
    "build",
    "defaults",
    "merge_into",
    "provenance",
    "register",
]
