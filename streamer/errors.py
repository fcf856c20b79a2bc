"""What the user can cause and fix: a bad file, URL, config, flag or model.

Every such error derives from UserError, so the command line reports it as one `error: ...` line and
exit status 2, without a traceback, and without importing the modules that raise it (torch and
mediapipe load only when a run starts). The message names the file (or key, or flag) and the cause in
the user's words."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 199  # under 200: what a user reads at a glance; the cause follows the file name, so it survives


class UserError(Exception):
    """Bad input the user can fix; str(error) is the one-line message."""


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS - len("error: ")) -> str:
    """The message's first line, cut to `limit` characters (a library's long text must not bury it)."""
    first = message.strip().splitlines()[0] if message.strip() else message
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."
