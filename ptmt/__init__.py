"""PTMT: auto-tuning of tiered-memory kernel knobs (AutoNUMA tiering, TPP, Colloid, UPM, ...)."""

__version__ = "0.1.0"
