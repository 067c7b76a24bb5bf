"""scissorbench, the application: the `scissorbench` CLI, the demo sweep and the pictures.

The floors below it, each importing only from those under it (checked by import-linter in the
test suite): `runners` and `reporting`, `records` and `synthetic`, `harness`, `backbones`,
`compressors`.
"""

from __future__ import annotations

from harness import tasks_dir

__all__ = ["tasks_dir"]
