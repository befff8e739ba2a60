"""Spec files: pydantic models of every kind, the YAML loader and cross-document checks."""
