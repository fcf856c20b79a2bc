"""The cameras file: many cameras (or recordings) in one YAML file, each with its own output and
its own overrides of the config. Read by the local mode and by the Ray engine alike.

    cameras:
      - name: lobby                                   # names the camera in logs, stats and outputs
        url: rtsp://viewer:${CAM_PASS}@cam-lobby.local/stream1
        output: out/lobby/                            # a folder (ends with /): out/lobby/lobby.mp4
      - name: archive-0412
        url: recordings/2024-04-12_gate.mp4           # a file: relative to this file's folder
        output: out/archive-0412.mp4
        detection: {every_n_frames: 2}                # overrides of the config, this camera only

Validated like the config: an unknown key, a wrong value, a duplicate name or output, a malformed
URL or an unset `${VAR}` is a ConfigError naming the file and the line. A camera's own sections
win over `--config` and the command-line flags (the most specific setting wins). Its encoder
settings are under `encoding:` (the config's `output:` section), because `output:` is its target.
The restorer is shared by every camera, so `restoration` is set once, in `--config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamer.config import (
    Config,
    ConfigError,
    _line_suffix,
    _parse_yaml,
    _read_text,
    expand_env,
)
from streamer.urls import (
    LIVE_SCHEMES,
    is_live_url,
    mask_credentials,
    push_format,
    url_problem,
    url_scheme,
)

# Per-camera override sections: the key in the cameras file -> the config section it overrides.
OVERRIDE_SECTIONS = {
    "source": "source",
    "detection": "detection",
    "tracking": "tracking",
    "compositing": "compositing",
    "encoding": "output",
    "pipeline": "pipeline",
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"  # safe in a file name and a log line


class CameraEntry(BaseModel):
    """One camera of the file, as written (before `${VAR}` expansion and path resolution)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, max_length=64)
    url: str = Field(min_length=1)
    output: str = Field(min_length=1)
    source: dict[str, Any] = {}
    detection: dict[str, Any] = {}
    tracking: dict[str, Any] = {}
    compositing: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    pipeline: dict[str, Any] = {}


class CamerasFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: list[CameraEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Camera:
    """A camera ready to run: its URL expanded, its paths resolved, its effective config."""

    name: str
    url: str  # as opened: `${VAR}` replaced (may hold a password: log `label` instead)
    output: str  # a file path (absolute) or a push URL
    config: Config  # --config and flags, with the camera's own sections on top
    line: int  # where the camera starts in its file

    @property
    def label(self) -> str:
        return mask_credentials(self.url)

    @property
    def is_live(self) -> bool:
        return is_live_url(self.url)


def load_cameras(path: str | Path, base: Config, env: Mapping[str, str] | None = None) -> list[Camera]:
    """Read and check a cameras file; every camera gets `base` with its own overrides on top.

    Relative file paths (inputs and outputs) are relative to the cameras file's folder, so the
    file means the same wherever the command runs (and on every node of a cluster)."""
    path = Path(path)
    origin = str(path)
    data, root_node = _parse_yaml(_read_text(path), origin)
    try:
        parsed = CamerasFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        if first["type"] == "string_pattern_mismatch":
            message = "a name is letters, digits, '_', '-' or '.', starting with a letter or digit"
        raise ConfigError(f"{origin}{_line_suffix(root_node, loc)}: {_dotted(loc)}: {message}") from None
    folder = path.resolve().parent
    env = os.environ if env is None else env
    cameras: list[Camera] = []
    for index, entry in enumerate(parsed.cameras):
        where = _Where(origin, root_node, index)
        camera = _camera(entry, base, folder, env, where)
        _check_unique(camera, cameras, where)
        cameras.append(camera)
    return cameras


@dataclass(frozen=True)
class _Where:
    """Names a camera's keys by file and line in error messages."""

    origin: str
    root_node: Any
    index: int

    def __call__(self, *keys: str | int) -> str:
        loc = ("cameras", self.index, *keys)
        return f"{self.origin}{_line_suffix(self.root_node, loc)}: {_dotted(loc)}"

    @property
    def line(self) -> int:
        suffix = _line_suffix(self.root_node, ("cameras", self.index))
        return int(suffix[1:]) if suffix else 0


def _camera(entry: CameraEntry, base: Config, folder: Path, env: Mapping[str, str], where: _Where) -> Camera:
    config = _camera_config(entry, base, where)
    url = expand_env(entry.url, env, where("url"))
    url = _checked_url(url, where) if url_scheme(url) else str(folder / url)
    output = expand_env(entry.output, env, where("output"))
    if push_format(output) is None:
        output = _output_path(entry.name, folder / output, output.endswith(("/", os.sep)), config.output.container)
    return Camera(entry.name, url, output, config, where.line)


def _checked_url(url: str, where: _Where) -> str:
    scheme = url_scheme(url)
    if scheme not in LIVE_SCHEMES:
        raise ConfigError(
            f"{where('url')}: unknown URL scheme {scheme!r} (expected one of "
            f"{', '.join(sorted(LIVE_SCHEMES))}, or a file path)"
        )
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(f"{where('url')}: {mask_credentials(url)}: {problem}")
    return url


def _output_path(name: str, target: Path, is_folder: bool, container: str) -> str:
    """A folder target holds NAME.CONTAINER; a file target is taken as it is."""
    if is_folder or target.is_dir():
        return str(target / f"{name}.{container}")
    return str(target)


def _camera_config(entry: CameraEntry, base: Config, where: _Where) -> Config:
    """`base` with the camera's sections merged in, validated as a whole (cross-field rules too)."""
    if "inputs" in entry.source:
        raise ConfigError(f"{where('source', 'inputs')}: not allowed per camera (the camera's url is its input)")
    data = base.model_dump()
    for key, section in OVERRIDE_SECTIONS.items():
        _merge(data[section], getattr(entry, key))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        failed_section, *rest = first["loc"]
        key = {value: key for key, value in OVERRIDE_SECTIONS.items()}.get(str(failed_section), str(failed_section))
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {first['input']!r})"
        raise ConfigError(f"{where(key, *rest)}: {message}") from None


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _check_unique(camera: Camera, earlier: list[Camera], where: _Where) -> None:
    for other in earlier:
        if other.name == camera.name:
            raise ConfigError(f"{where('name')}: duplicate camera name {camera.name!r} (also on line {other.line})")
        if _same_target(other.output, camera.output):
            raise ConfigError(
                f"{where('output')}: camera {camera.name!r} writes to the same output as "
                f"{other.name!r} (line {other.line}): {mask_credentials(camera.output)}"
            )


def _same_target(a: str, b: str) -> bool:
    if push_format(a) or push_format(b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
