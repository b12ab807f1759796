"""The one base class of every error that is the user's to fix.

A stage prints such an error as `error: <message>` and exits 2, removing its outputs (onecycle.cli).
Each message names what is wrong and what to do. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: params, data, an artifact of an earlier stage, a device, a run that diverged."""
