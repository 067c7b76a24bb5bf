"""Reporting: results-schema records -> tidy frames, tables, figures and a shareable report.

The reporting layer reads only records (docs/results_schema.md): our runs and the paper's
numbers in `results/reference/`.
"""

from reporting.benchmarks import BENCHMARKS, Benchmark, align
from reporting.load import load_records, records_frame

__all__ = ["BENCHMARKS", "Benchmark", "align", "load_records", "records_frame"]
