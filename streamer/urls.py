"""Telling live stream URLs from file paths, and keeping credentials out of logs and errors."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

# Schemes FFmpeg reads as a network stream. Anything else (including a path that merely
# contains "rtsp", like /footage/rtsp_cam1.mp4) is a file.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "http", "https", "udp", "tcp", "srt"})
PUSH_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# scheme://user:password@host -> the password is everything from the first ':' after the user
# name to the last '@' of the URL: camera passwords often contain unescaped '@' or '/', and
# masking too much beats leaking part of a password.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s'\"]*):[^\s'\"]*@")
# ?user=admin&password=secret style credentials, used by many IP cameras.
_SECRET_QUERY = re.compile(r"(?P<key>[?&;](?:password|passwd|pass|pwd|token|key|secret)=)[^&;#\s]*", re.IGNORECASE)

MASK = "***"


def url_scheme(text: str) -> str | None:
    """The lower-case scheme of `text` if it is a URL (`rtsp://...`), else None."""
    match = _SCHEME.match(text.strip())
    return match.group(1).lower() if match else None


def is_live_url(text: str) -> bool:
    """True for a network stream URL (rtsp://, rtmp://, http(s)://, udp://, srt://, ...)."""
    return url_scheme(text) in LIVE_SCHEMES


def url_problem(url: str) -> str | None:
    """Why a stream URL is malformed ("malformed URL (no host)"), or None when it names a host.
    Checked before any connection attempt, so a typo fails at once."""
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        return f"malformed URL ({exc})"
    return None if host else "malformed URL (no host)"


def push_format(text: str) -> str | None:
    """The FFmpeg muxer for a push target URL (rtsp:// -> "rtsp", rtmp:// -> "flv"), else None."""
    return PUSH_FORMATS.get(url_scheme(text) or "")


def mask_credentials(text: str) -> str:
    """Replace every URL password in `text` (a URL or a whole log line) with ***.

    rtsp://admin:secret@cam/stream -> rtsp://admin:***@cam/stream, and ?password=x -> ?password=***.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}{MASK}", text)
