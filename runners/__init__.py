"""Runners: compose model x compressor x retention x tasks and execute lmms-eval (upcoming)."""
