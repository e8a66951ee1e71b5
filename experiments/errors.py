"""Errors a user can cause and fix. `experiments.main` prints each as one message and exits
with status 2, without a traceback (set DGM_VERBOSE=1 or pass --verbose to see it).

Anything else that escapes is a bug in this code base: it keeps its traceback and exit
status 1.
"""
from __future__ import annotations


class UserError(Exception):
  """A mistake in the config, the data, the workdir or the command line."""


class WorkdirError(UserError):
  """A workdir that cannot be used: not a directory, not writable, full, or held by a
  running trainer, or a run whose saved config the new one contradicts."""
