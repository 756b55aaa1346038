"""One exception family for expected failures (bad input, bad values, damaged files, a busy run
folder). The command line turns a :class:`UserError` into one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.

Each subclass also derives from the builtin a caller would naturally catch (``ValueError`` for
a bad value, ``RuntimeError`` for a run that cannot go on), so library code can catch either.

Which to raise: :class:`ConfigError` when the fix is a different value, name or option;
:class:`InputError` when the fix is a different (or repaired) file; a missing file, a directory
where a file is expected, or one that cannot be read or written stays an ``OSError``
(``FileNotFoundError``, ``IsADirectoryError``, ...) naming the path, which the command line
also reports in one line. A broken invariant of our own code is not a UserError: leave it a
ValueError / KeyError / assert, so that it keeps its traceback. docs/DESIGN.md section 6 has the
exit statuses and ``--debug``.
"""

from __future__ import annotations


# torch.utils.data re-raises a loader worker's exception as ``type(msg)`` with msg = "Caught X in
# DataLoader worker process N.\nOriginal Traceback ...", the worker's whole traceback.
_WORKER_WRAP = "Caught "
_WORKER_WHERE = "in DataLoader worker process"


class UserError(Exception):
    """An expected failure caused by the input, the configuration or the environment; the message
    names what and why (the file, row, key or value) in one line.

    Raised in a DataLoader worker, it comes back to the main process with its own message (the
    worker's traceback is kept as a note, which ``--debug`` shows), so the command line still
    prints one line."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(_WORKER_WRAP) \
                and _WORKER_WHERE in args[0].partition("\n")[0]:
            wrapped = args[0]
            # the traceback's last line is "module.Class: message" (the message may span lines)
            marker = f"\n{type(self).__module__}.{type(self).__qualname__}: "
            at = wrapped.rfind(marker)
            if at >= 0:
                args = (wrapped[at + len(marker):].rstrip("\n"),)
                if hasattr(self, "add_note"):  # Python >= 3.11
                    self.add_note(wrapped)
        super().__init__(*args)


class ConfigError(UserError, ValueError):
    """A configuration value, override, model name or command-line value that cannot be used."""


class InputError(UserError, ValueError):
    """A manifest, label map, shard or media file that cannot be used."""


class RunError(UserError, RuntimeError):
    """A training run that cannot go on: diverged, its folder is in use, its checkpoint is damaged."""


class SampleError(InputError, RuntimeError):
    """Decoding or labelling one training / evaluation row failed; names the row (never silently
    replaced). Raised in loader workers and re-raised in the main process."""


__all__ = ["UserError", "ConfigError", "InputError", "RunError", "SampleError"]
