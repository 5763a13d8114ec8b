"""Statistics of a study's decisions: intervals, calls and multiplicity (pure functions, no I/O)."""
