"""Antidistillation sampling."""
