"""Offline phase: profiling sweeps, sensitivity analysis and the query model."""
