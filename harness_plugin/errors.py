"""Errors a user can cause. Each message names the fix, so one exception is all a user needs to read."""

from __future__ import annotations


class AntidistillError(ValueError):
    """Base class for configuration and input errors raised by this package."""


class VocabularyMismatchError(AntidistillError):
    """Teacher and proxy do not share a tokenizer, so a per-token penalty cannot be aligned."""


class GradientMismatchError(AntidistillError):
    """A saved proxy gradient does not fit the proxy it is used with."""


class NonFinitePenaltyError(AntidistillError, FloatingPointError):
    """The penalty Δ contains NaN or inf (usually an fp16 proxy overflowing)."""
