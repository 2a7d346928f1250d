"""Figures and reports drawn from MLflow runs (never from the pipeline's internals).

`antidistill figures` reads a benchmark experiment's parent run and its grid-point children and draws the
trade-off figure and the summary table; `antidistill figures fd-error` measures the finite-difference error of
the penalty Δ against its exact (JVP) value and plots it.
"""
