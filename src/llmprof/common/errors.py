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


def brief(exc: BaseException, limit: int = 160) -> str:
    """What an underlying error says, fit for one line: its first line, cut at ``limit`` characters."""
    text = " ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
