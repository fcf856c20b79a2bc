"""What the user can cause and fix: a bad file, URL, config, flag or model.

Every such error derives from UserError, so the command line reports it as one `error: ...` line and
exit status 2, without a traceback, and without importing the modules that raise it (torch and
mediapipe load only when a run starts). The message names the file (or key, or flag) and the cause in
the user's words."""
from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; str(error) is the one-line message."""
