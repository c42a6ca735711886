"""Evaluation, returning data: the ruler (scoring, calibration, verdicts), recognisers as embedders, the transfer
matrix, the adaptive defender, per-set validation scores, realism of the people, and the runner (evaluate) that
returns a run's report."""
