"""Telling live stream URLs from file paths, and keeping credentials out of logs and errors."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

# Schemes FFmpeg reads as a network stream. Anything else (including a path that merely
# contains "rtsp", like /footage/rtsp_cam1.mp4) is a file.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "http", "https", "udp", "tcp", "srt"})
PUSH_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# user:password@host -> the password is everything from the first ':' after the user name to
# the last '@' of the word: camera passwords often contain unescaped '@' or '/', and masking too
# much beats leaking part of a password. The scheme is optional and may be mistyped
# (`rtsp:/admin:pw@cam`, `rtsp:admin:pw@cam`, `//admin:pw@cam`, `admin:pw@cam/live`).
_USERINFO = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.\-]*:/*|/+)?[A-Za-z0-9._~%!$&*+,;=\-]+):[^\s'\"]*@")
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
    hint = credentials_hint(url)
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        return f"malformed URL ({hint or exc})"
    if not host:
        return "malformed URL (no host)"
    return f"malformed URL ({hint})" if hint else None


def push_format(text: str) -> str | None:
    """The FFmpeg muxer for a push target URL (rtsp:// -> "rtsp", rtmp:// -> "flv"), else None."""
    return PUSH_FORMATS.get(url_scheme(text) or "")


def mask_credentials(text: str) -> str:
    """Replace every URL password in `text` (a URL or a whole log line) with ***.

    rtsp://admin:secret@cam/stream -> rtsp://admin:***@cam/stream, and ?password=x -> ?password=***.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}{MASK}", text)


# Characters that end a URL's user name or password: in a password they must be percent-encoded.
USERINFO_SPECIALS = ":/@?#[] "
CREDENTIALS_HINT = (
    "a '/', '@' or ':' in a user name or password must be percent-encoded (%2F, %40, %3A); "
    "or write the password as ${VAR}: a variable's value is encoded for you"
)


def quote_userinfo(value: str) -> str:
    """`value` made safe inside a URL's user:password part: the characters that would end it
    are percent-encoded; '%' is left alone, so a value already encoded stays as it is."""
    return quote(value, safe="".join(chr(c) for c in range(33, 127) if chr(c) not in USERINFO_SPECIALS))


def userinfo_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the user:password part of a URL (between '://' and its last '@' before
    the path), or None when `text` has none. A `${VAR}` there may hold any character."""
    match = _SCHEME.match(text)
    if not match:
        return None
    start = match.end()
    at = text.rfind("@", start)
    return (start, at) if at > start else None


def credentials_hint(url: str) -> str | None:
    """A hint when `url` looks like it has a password with an unencoded '/', '@' or ':' in it."""
    span = userinfo_span(url)
    if span is None:
        return None
    userinfo = url[span[0] : span[1]]
    if "/" in userinfo or "@" in userinfo or userinfo.count(":") > 1:
        return CREDENTIALS_HINT
    return None


_MISTYPED_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:/{0,1}(?!/)|[A-Za-z][A-Za-z0-9+.\-]*//|//)\S")


def not_a_file_hint(text: str) -> str:
    """' (...)' for a missing "file" that looks like a mistyped stream URL, else ''."""
    scheme = text.split(":", 1)[0].split("/", 1)[0].lower()
    if scheme in LIVE_SCHEMES and _MISTYPED_URL.match(text) and not is_live_url(text):
        return f" (a stream URL starts with {scheme}://)"
    if _USERINFO.search(text):
        return " (a stream URL starts with rtsp://)"
    return ""
