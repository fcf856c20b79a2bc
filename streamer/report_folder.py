"""Where the report goes, checked at start (before any model loads): no torch, no OpenCV here.

An existing report folder is replaced only with --overwrite, and only when it is a report (it
holds run.json): --overwrite never empties a folder of someone's other files. A folder that
cannot be written is an error now, not after an hour of footage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from streamer.errors import UserError

MARKER_FILE = "run.json"  # a folder holding it is a report (which --overwrite may replace)


class ReportError(UserError):
    """The report folder cannot be used (exists, not writable, disk full): a one-line message."""


def report_folder(configured: str, output: str | None, jobs: int) -> Path:
    """The report folder: the configured one, else beside the output (OUTPUT_report for one output
    file, OUTPUT/report for an output folder)."""
    if configured:
        return Path(configured).expanduser()
    if not output or "://" in output:
        raise ReportError("report.folder is not set: give --report DIR (a stream output has no folder beside it)")
    target = Path(output)
    if jobs > 1 or output.endswith(("/", "\\")) or target.is_dir():
        return target / "report"
    return target.with_name(f"{target.stem}_report")


def prepare_folder(folder: Path, overwrite: bool) -> None:
    """Make an empty report folder, or fail now with a one-line ReportError."""
    if folder.exists():
        if not overwrite:
            raise ReportError(f"{folder}: report folder exists (use --overwrite to replace it)")
        if not folder.is_dir():
            raise ReportError(f"{folder}: exists and is not a folder")
        if any(folder.iterdir()) and not (folder / MARKER_FILE).is_file():
            raise ReportError(f"{folder}: not a report folder (no {MARKER_FILE}); not replacing it")
        shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ReportError(f"{folder}: report folder cannot be written ({exc.strerror or exc})") from None
