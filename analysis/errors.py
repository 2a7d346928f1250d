"""The one error type of the analysis package: a message that names the fix."""

from __future__ import annotations

from harness_plugin.errors import AntidistillError


class AnalysisError(AntidistillError):
    """Missing tracking URI, experiment, parent run or metrics: something the user can fix."""
