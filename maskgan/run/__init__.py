"""A run's things: building models and the gallery from a config (build), the one checkpoint save/read/list
(checkpoints), checks before Ray starts (preflight), finiteness and provenance."""
