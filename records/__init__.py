"""Run records: the results schema (docs/results_schema.md), their keys and the atomic store.

Below both `runners` (which writes records) and `reporting` (which reads only records), so that
neither imports the other.
"""
