"""Errors raised by llmprof: each one names the file, the problem and the next step."""

from __future__ import annotations


class LlmprofError(Exception):
    """Base class for every error llmprof reports to the user as one line."""


class InputError(LlmprofError):
    """An input file is missing, unreadable or not what the stage expects."""


class SchemaError(InputError):
    """An Nsight Systems export lacks a table or column that is required."""


class ConfigError(LlmprofError):
    """The workflow or command configuration is invalid."""
