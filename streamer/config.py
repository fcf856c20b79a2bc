"""The validated configuration: one pydantic model per section of the YAML file.

Unknown keys, wrong types and out-of-range values are errors that name the key path and
the YAML line they come from (or the command-line flag that set them), never silent defaults.
Secrets stay out of the file: `${VAR}` in a source URL is taken from the environment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamer import REPO_ROOT
from streamer.errors import UserError
from streamer.urls import quote_userinfo, userinfo_span

DETECTOR_MODELS = {
    "full_range": "models/face_detection_full_range_sparse.tflite",
    "short_range": "models/face_detection_short_range.tflite",
}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(UserError, ValueError):
    """The configuration (file, flag or environment) is invalid; the message says what and where."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    """Also the sources' options (sources.SourceOptions): one schema, one set of defaults and rules."""

    # Inputs used when the command line names none (e.g. a camera list); `${VAR}` is expanded.
    inputs: list[str] = []
    # The rest are sources.SourceOptions (live streams only).
    transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)  # no data for this long: a stalled stream
    reconnect_initial_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    # Backoff cap while the camera was up within the last minute: a camera that just dropped
    # (a reboot, a network blip) is usually back within seconds.
    reconnect_recent_max_s: float = Field(2.0, gt=0, le=3600)
    connect_attempts: int = Field(3, ge=1, le=100)  # tries per opening of a camera
    # A camera that cannot be opened at start-up is retried in the background while the others
    # record; `required: true` makes it end the run instead (exit status 3).
    required: bool = False
    # A camera with no frame for this long is given up for the rest of the run (exit status 3
    # at the end); 0: retried forever (24/7 recording).
    give_up_after_s: float = Field(0.0, ge=0, le=10**7)

    @model_validator(mode="after")
    def _backoff_cap_not_below_start(self) -> SourceConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class TilingConfig(_Section):
    enabled: bool = False
    tile_size: int = Field(384, ge=64, le=4096)  # px; a face is enlarged by frame size / tile size
    overlap: int = Field(128, ge=0, le=4096)  # px shared by neighbouring tiles: the widest face never cut
    whole_frame: bool = True  # also look at the whole frame, for faces too big for a tile
    nms_threshold: float = Field(0.4, gt=0.0, le=1.0)  # a box covering more of a better one is a duplicate

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> TilingConfig:
        if self.overlap >= self.tile_size:
            raise ValueError("overlap must be smaller than tile_size")
        return self


class SearchConfig(_Section):
    """With tiling on: where the detector looks in each frame (streamer/search_policy.py)."""

    # adaptive: each tracked face's region every detection round, plus changed tiles, oldest
    # first, within budget_ms; every_tile: every tile at every detection round (the reference).
    policy: Literal["adaptive", "every_tile"] = "adaptive"
    # Detector time per video frame; unset: a quarter of the every-tile search's (4x cheaper).
    budget_ms: float | None = Field(None, gt=0.0, le=10000.0)
    call_ms: float = Field(2.5, gt=0.0, le=1000.0)  # one detector call's cost (the budget is in calls)
    still_rescan_s: float = Field(3.0, gt=0.0, le=3600.0)  # a tile with no change is searched this often


class DetectionConfig(_Section):
    model: str = "full_range"  # full_range | short_range | a path to a MediaPipe .tflite
    min_score: float = Field(0.5, gt=0.0, lt=1.0)
    every_n_frames: int = Field(3, ge=1, le=100)
    min_face_px: int = Field(10, ge=0, le=2048)
    tiling: TilingConfig = TilingConfig()
    search: SearchConfig = SearchConfig()

    def model_path(self) -> Path:
        return resolve_repo_path(DETECTOR_MODELS.get(self.model, self.model))


class TrackingConfig(_Section):
    """tracking.FaceTracker's parameters."""

    max_missed: int = Field(2, ge=0, le=1000)  # detection rounds a track survives without a match
    iou_threshold: float = Field(0.2, gt=0.0, le=1.0)
    max_center_distance: float = Field(1.5, gt=0.0, le=20.0)  # in face sizes, for small fast faces
    smoothing: float = Field(0.6, gt=0.0, le=1.0)  # how far one detection moves the box
    velocity_smoothing: float = Field(0.3, ge=0.0, le=1.0)


class RestorationConfig(_Section):
    enabled: bool = True  # off: detect and composite only (benchmarks, dry runs)
    model: str = "models/face_restorer.ts"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(16, ge=1, le=512)
    max_latency_ms: float = Field(40.0, ge=0.0, le=10000.0)
    fp16: bool = True  # CUDA only (a CPU runs float32)
    bf16: bool = False  # CPU autocast, where the CPU supports it
    threads: int = Field(0, ge=0, le=256)  # 0: torch chooses
    # Faces larger than this keep their own pixels: the shipped model outputs a face ~43 px wide
    # (64 / 1.5), so restoring a larger one would blur it. 0: restore every face.
    max_face_px: int = Field(48, ge=0, le=4096)

    def model_path(self) -> Path:
        return resolve_repo_path(self.model)


class VerificationConfig(_Section):
    """The restore gate (streamer.verification): what a detection must pass to be restored."""

    enabled: bool = True  # off: every detected face is restored (not for evidence)
    # Measured with bench/detection_quality.py: RetinaFace's score separates faces from look-alikes
    # (the back of a head, a heraldic lion) best; the keypoint layout rejected real faces and no
    # look-alike that RetinaFace passed, so it is off by default.
    min_score: float = Field(0.5, ge=0.0, le=1.0)  # the detector's score a check needs
    keypoints: bool = False  # the eyes, nose and mouth must have a face's layout
    second_opinion: bool = True  # RetinaFace must see a face there too
    second_opinion_min_score: float = Field(0.9, ge=0.0, le=1.0)
    confirm_checks: int = Field(2, ge=1, le=4)  # passed checks (of a track's last 4) before it is restored


class CompositingConfig(_Section):
    mode: Literal["paste", "overlay", "side-by-side"] = "paste"
    feather: float = Field(0.15, ge=0.0, le=0.5)  # width of the blend ramp, as a fraction of the crop side
    inset_scale: int = Field(1, ge=1, le=8)  # overlay: inset side / the model's output side (1: its own pixels)
    # In a well-lit frame a restored face keeps its input's brightness and colour balance (the model
    # cannot tell a dark face from an under-exposed one); in a dark frame the model relights it.
    keep_brightness: bool = True


class OutputConfig(_Section):
    codec: Literal["libx264", "ffv1"] = "libx264"
    crf: int = Field(20, ge=0, le=51)  # x264 quality: lower is better and larger; 20 keeps faces' detail
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = (
        # 1080p crf 20, CPU and bytes a frame (bench/pipeline_bench.py --presets, 2 cores): superfast 16 ms,
        # 26 kB; ultrafast 11 ms but 76 kB; veryfast 38 ms for 21 kB. batch.yaml trades speed for size.
        "superfast"
    )
    container: Literal["mp4", "mkv"] = "mp4"
    copy_audio: bool = True

    @model_validator(mode="after")
    def _ffv1_needs_mkv(self) -> OutputConfig:
        if self.codec == "ffv1" and self.container != "mkv":
            raise ValueError("codec ffv1 needs container mkv")
        return self


class RecordingConfig(_Section):
    """A live camera's file output: rotating segments (sinks.SegmentRecorder). Files are not segmented."""

    segment_s: float = Field(600.0, ge=0, le=86400)  # segment length; 0: one segment per connection
    # Container of the segments; ts recovers best after a crash (bench/crash_recovery.py).
    format: Literal["ts", "mkv", "mp4"] = "ts"
    on_resize: Literal["segment", "scale"] = "segment"  # a camera that changes size: new segment, or scaled
    max_age_h: float = Field(0.0, ge=0, le=10**6)  # delete a camera's segments older than this; 0: keep
    max_total_gb: float = Field(0.0, ge=0, le=10**6)  # per camera: delete its oldest beyond this; 0: no limit


class HealthConfig(_Section):
    """What an operator watches on a live run."""

    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus /metrics and /healthz on this port; 0: off
    metrics_host: str = "0.0.0.0"
    no_frame_s: float = Field(10.0, gt=0, le=86400)  # /healthz fails when a camera has had no frame this long
    warn_down_s: float = Field(30.0, gt=0, le=86400)  # status WARNING when a camera is not up this long


class PipelineConfig(_Section):
    queue_size: int = Field(8, ge=1, le=1024)  # frames between two stages of a file
    live_queue_size: int = Field(2, ge=1, le=1024)  # frames waiting after capture of a live source
    live_drop: Literal["oldest", "newest"] = "oldest"  # which frame a late live pipeline drops


class RayConfig(_Section):
    """The Ray engine (`--engine ray`): where camera jobs and restorer replicas run."""

    address: str | None = None  # an existing cluster ("auto", "ray://host:10001", "host:6379"); None: start one here
    restorer_replicas: int = Field(1, ge=1, le=256)  # restorer actors; crops of every camera are batched across them
    restorer_gpus: float | None = Field(None, ge=0, le=8)  # GPUs per replica; None: 1 where the cluster has GPUs
    restorer_cpus: float = Field(1.0, ge=0, le=256)
    camera_cpus: float = Field(1.0, ge=0, le=256)  # CPUs reserved per camera job (decode, detect, encode)
    restore_timeout_s: float = Field(10.0, gt=0, le=600)  # one batch's wait for a replica before trying another
    restore_attempts: int = Field(3, ge=1, le=20)  # then its faces are written unrestored (and counted)
    object_store_mb: int = Field(0, ge=0, le=1_000_000)  # a cluster started here; 0: Ray's default


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    status_interval_s: float = Field(10.0, gt=0, le=3600)  # live status line period


class ReportConfig(_Section):
    """The investigator's report (streamer/report.py): best shots of every track, the processing record."""

    enabled: bool = False  # --report DIR turns it on
    # The report folder; relative paths are from the current folder. Empty: beside the output
    # (OUTPUT_report for a file, OUTPUT/report for a folder).
    folder: str = ""
    top_n: int = Field(3, ge=1, le=50)  # shots kept per track
    refresh_s: float = Field(5.0, gt=0, le=3600)  # index.html is rewritten at most this often during a run
    max_tracks: int = Field(0, ge=0, le=10_000_000)  # live disk bound: keep the newest N tracks (0: all)
    max_age_s: float = Field(0.0, ge=0, le=10 * 365 * 86400)  # live disk bound: drop older tracks (0: never)


class Config(_Section):
    source: SourceConfig = SourceConfig()
    detection: DetectionConfig = DetectionConfig()
    tracking: TrackingConfig = TrackingConfig()
    verification: VerificationConfig = VerificationConfig()
    restoration: RestorationConfig = RestorationConfig()
    compositing: CompositingConfig = CompositingConfig()
    output: OutputConfig = OutputConfig()
    pipeline: PipelineConfig = PipelineConfig()
    ray: RayConfig = RayConfig()
    logging: LoggingConfig = LoggingConfig()
    report: ReportConfig = ReportConfig()
    recording: RecordingConfig = RecordingConfig()
    health: HealthConfig = HealthConfig()


def resolve_repo_path(path: str | Path) -> Path:
    """A relative path in a config means a file of this repository, wherever the CLI runs from."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def expand_env(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace each `${VAR}` with its value; a missing variable is an error naming it (never a value).
    In a URL's user:password part the value is percent-encoded (a password may hold '/', '@', ':')."""
    userinfo = userinfo_span(text)

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        if userinfo is not None and userinfo[0] <= match.start() < userinfo[1]:
            return quote_userinfo(env[name])
        return env[name]

    return _ENV_REFERENCE.sub(value_of, text)


def load_config(
    path: str | Path | None,
    overrides: Mapping[str, tuple[Any, str]] | None = None,
) -> Config:
    """Read and validate a config file (None: the defaults), then apply command-line overrides.

    `overrides` maps a dotted key ("detection.every_n_frames") to (value, flag that set it), so an
    invalid flag value is reported by its flag name."""
    return load_validated(Config, path, overrides)


_Model = TypeVar("_Model", bound=BaseModel)


def load_validated(
    schema: type[_Model], path: str | Path | None, overrides: Mapping[str, tuple[Any, str]] | None = None
) -> _Model:
    """A YAML file (None: the defaults) with `overrides` applied, validated by a pydantic `schema`: the one
    loader of the pipeline's config and training's settings (training.train.TrainConfig). An error is a
    ConfigError naming the file and line, or the flag, of the first bad key."""
    text, origin = ("", "<defaults>") if path is None else (_read_text(Path(path)), str(path))
    data, root_node = _parse_yaml(text, origin)
    overrides = overrides or {}
    for dotted_key, (value, _flag) in overrides.items():
        _set_dotted(data, dotted_key, value)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, origin, root_node, overrides)) from None


def effective_config_yaml(config: Config, mask: Callable[[str], str]) -> str:
    """The config as YAML, with `mask` applied to every source URL (credentials never printed)."""
    data = config.model_dump(mode="json")
    data["source"]["inputs"] = [mask(url) for url in data["source"]["inputs"]]
    return yaml.safe_dump(data, sort_keys=False)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None


def _parse_yaml(text: str, origin: str) -> tuple[dict, yaml.Node | None]:
    """The YAML as plain data, and its node tree (which knows the line of every key)."""
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}:1: expected a mapping of sections at the top level")
    return data, root_node


def _set_dotted(data: dict, dotted_key: str, value: Any) -> None:
    *parents, leaf = dotted_key.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def _describe_validation_error(
    exc: ValidationError, origin: str, root_node: yaml.Node | None, overrides: Mapping[str, tuple[Any, str]]
) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    key_path = ".".join(str(part) for part in loc) or "<top level>"
    flag = _flag_for(loc, overrides)
    where = f"{flag}" if flag else f"{origin}{_line_suffix(root_node, loc)}"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        message += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {key_path}: {message}{more}"


def _flag_for(loc: tuple, overrides: Mapping[str, tuple[Any, str]]) -> str | None:
    dotted = ".".join(str(part) for part in loc)
    entry = overrides.get(dotted)
    return entry[1] if entry else None


def _line_suffix(root_node: yaml.Node | None, loc: tuple) -> str:
    """':LINE' of the deepest key (or list item) of the path `loc` in the YAML, '' when it has none."""
    node, line = root_node, None
    for part in loc:
        found = _child_node(node, part)
        if found is None:
            break
        marker, node = found
        line = marker.start_mark.line + 1
    return f":{line}" if line is not None else ""


def _child_node(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(the node that names `part`, its value node) inside a mapping or a sequence node."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == part:
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part], node.value[part]
    return None
