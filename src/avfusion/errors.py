"""One exception family for expected failures (bad input, bad values, damaged files, a busy run
folder). The command line turns a :class:`UserError` into one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.

Each subclass also derives from the builtin a caller would naturally catch (``ValueError`` for
a bad value, ``RuntimeError`` for a file that cannot be decoded), so library code can catch
either.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure caused by the input, the configuration or the environment; the message
    names what and why (the file, row, key or value) in one line."""


class ConfigError(UserError, ValueError):
    """A configuration value, override, model name or command-line value that cannot be used."""


class InputError(UserError, ValueError):
    """A manifest, label map, shard or media file that cannot be used."""


class RunError(UserError, RuntimeError):
    """A training run that cannot go on: diverged, its folder is in use, its checkpoint is damaged."""


__all__ = ["UserError", "ConfigError", "InputError", "RunError"]
