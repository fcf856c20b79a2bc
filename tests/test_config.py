"""The config schema: bad files are errors that name the key and the line; flags override."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config import REPO_ROOT, Config, ConfigError, expand_env, load_config

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("detection:\n  min_score: 0.5\n  every_n_frame: 2\n", ":3: detection.every_n_frame: unknown key"),
        ("detecton:\n  min_score: 0.5\n", ":1: detecton: unknown key"),
        ("restoration:\n  batch_size: many\n", ":2: restoration.batch_size: Input should be a valid integer"),
        ("restoration:\n  device: tpu\n", ":2: restoration.device: Input should be 'auto', 'cpu' or 'cuda'"),
        ("detection:\n  tiling:\n    enabled: true\n    overlap: -1\n", ":4: detection.tiling.overlap: Input should"),
        ("detection:\n  min_score: 1.5\n", ":2: detection.min_score: Input should be less than 1 (got 1.5)"),
        ("compositing:\n  mode: blend\n", ":2: compositing.mode:"),
        ("output:\n  codec: ffv1\n", ":1: output: Value error, codec ffv1 needs container mkv"),
        ("source:\n  inputs: rtsp://cam\n", ":2: source.inputs: Input should be a valid list"),
        ("detection: [1, 2\n", ":2: invalid YAML"),
        ("- just\n- a list\n", ":1: expected a mapping"),
    ],
)
def test_a_bad_config_names_the_key_and_the_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(str(path)) and expected in message
    assert "\n" not in message


def test_a_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="config file not found: /no/such.yaml"):
        load_config("/no/such.yaml")


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_flags_override_the_file_and_a_bad_flag_value_names_the_flag(tmp_path):
    path = write(tmp_path, "detection:\n  every_n_frames: 5\nrestoration:\n  batch_size: 4\n")
    config = load_config(path, {"detection.every_n_frames": (2, "--detect-every")})
    assert config.detection.every_n_frames == 2 and config.restoration.batch_size == 4
    with pytest.raises(ConfigError, match=r"^--batch-size: restoration.batch_size: Input should be greater"):
        load_config(path, {"restoration.batch_size": (0, "--batch-size")})


def test_env_references_are_expanded_and_a_missing_one_is_named_without_values():
    env = {"CAM_PASS": "s3cret"}
    assert expand_env("rtsp://admin:${CAM_PASS}@cam/1", env, "source") == "rtsp://admin:s3cret@cam/1"
    with pytest.raises(ConfigError, match="^source.inputs\\[0\\]: environment variable CAM_USER is not set$"):
        expand_env("rtsp://${CAM_USER}:${CAM_PASS}@cam/1", env, "source.inputs[0]")


def test_relative_model_paths_resolve_against_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.restoration.model_path() == REPO_ROOT / "models" / "face_restorer.ts"
    assert config.detection.model_path().is_file()  # full_range names the bundled MediaPipe model


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_shipped_configs_are_valid(path):
    load_config(path)


def test_the_default_config_file_states_the_schemas_defaults():
    """configs/default.yaml documents the defaults; the schema (streamer/config.py) is where they live, and
    the stages take theirs from it. A value in the file that differs would be a second default."""
    assert load_config(REPO_ROOT / "configs" / "default.yaml") == Config()


def test_the_stages_defaults_are_the_schemas():
    from streamer.compositing import CompositeOptions
    from streamer.detection import TilingOptions
    from streamer.pipeline import PipelineSettings
    from streamer.sinks import SinkOptions
    from streamer.tracking import FaceTracker

    config = Config()
    sink, settings, tracker = SinkOptions(), PipelineSettings(), FaceTracker()
    assert (sink.codec, sink.crf, sink.preset) == (config.output.codec, config.output.crf, config.output.preset)
    assert settings.batching.batch_size == config.restoration.batch_size
    assert settings.queue_size == config.pipeline.queue_size
    assert tracker.max_missed == config.tracking.max_missed and tracker.smoothing == config.tracking.smoothing
    assert TilingOptions().tile_size == config.detection.tiling.tile_size
    assert CompositeOptions().feather == config.compositing.feather
    with pytest.raises(ValueError, match="overlap"):
        TilingOptions(tile_size=128, overlap=128)  # the schema's rule
    with pytest.raises(ValueError, match="smoothing"):
        FaceTracker(smoothing=0)
