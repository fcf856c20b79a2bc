"""The real stages, built from a validated Config (the pipeline itself only sees Components)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamer import compositing
from streamer.best_shots import (
    REFRESH_FRAMES,
    BestShotInsets,
    BestShots,
    RestoreWhenBetter,
    discard,
    track_end_frames,
)
from streamer.camera import CameraPolicy
from streamer.config import Config
from streamer.detection import MediaPipeFaceDetector, TilingOptions
from streamer.model_contract import ContractError, RestorerSpec
from streamer.pipeline import Components, Job, PipelineSettings
from streamer.restoration import TorchScriptRestorer, prepare_crops
from streamer.retinaface import RetinaFaceModel
from streamer.search_policy import AdaptiveSearch, SearchBudget
from streamer.sinks import (
    LOSSLESS_FILE_OPTIONS,
    RecordingOptions,
    SinkOptions,
    open_sink,
)
from streamer.sources import open_source
from streamer.tracking import FaceTracker
from streamer.values import StreamInfo
from streamer.verification import GateOptions, RestoreGate
from streamer.workers import Batching, CaptureLimits

if TYPE_CHECKING:
    from streamer.report import ReportWriter

logger = logging.getLogger(__name__)


class SpecRestorer(Protocol):
    """A restorer as the stages see it: the crops it takes (spec) and restore(). The local
    TorchScriptRestorer, or the Ray engine's client of a remote replica pool."""

    spec: RestorerSpec

    def restore(self, crops: np.ndarray) -> np.ndarray: ...


def build_components(config: Config) -> Components:
    """Load the models once (the restorer is shared by every source) and wire the stages.
    The detector model is tried here too, so a bad one fails before any output is opened."""
    _make_detector(config).close()
    restorer = load_restorer(config)
    _log_detection(config)  # after every model loaded: a bad one's error is the only line
    return assemble_components(config, restorer)


def check_models(config: Config) -> None:
    """Load the detector and the restorer (on the CPU) once, so a bad model is an error here,
    before jobs start elsewhere (the Ray engine loads them on the cluster's nodes)."""
    _make_detector(config).close()
    _log_detection(config)
    if config.restoration.enabled:
        load_restorer(
            config.model_copy(update={"restoration": config.restoration.model_copy(update={"device": "cpu"})})
        )


def assemble_components(
    config: Config, restorer: SpecRestorer | None, report: ReportWriter | None = None
) -> Components:
    """The stages of `config` around a restorer loaded elsewhere (shared by several cameras, each
    with its own config, or a remote one); None: faces are not restored. With a `report`, the
    write stage hands every packet to the report's best-shot collector."""
    sink_options = _sink_options(config)
    return Components(
        open_source=functools.partial(open_source, options=config.source),
        open_sink=functools.partial(open_sink, options=sink_options, recording=recording_options(config)),
        make_detector=functools.partial(_make_detector, config),
        make_tracker=functools.partial(FaceTracker, **config.tracking.model_dump()),
        restorer=restorer,
        crop_faces=_crop_faces(config, restorer),
        compose=_compositor(config),
        make_observer=_packet_observers(config, restorer, report),
        make_gate=_gate_factory(config, restorer),
        make_restore_filter=_restore_filter_factory(config, restorer, report),
    )


def _restore_filter_factory(config: Config, restorer: SpecRestorer | None, report: ReportWriter | None):
    """Overlay mode without a report shows each track's best view: a face is restored only when it
    beats it (best_shots.RestoreWhenBetter). The report keeps several views of each track, and
    paste mode pastes every face: both restore every face."""
    if restorer is None or config.compositing.mode != "overlay" or report is not None:
        return None
    forget_after = track_end_frames(config.tracking.max_missed, config.detection.every_n_frames)
    logger.info(
        "overlay: a face is restored when it beats its track's best view so far, or every %d frames", REFRESH_FRAMES
    )
    return functools.partial(RestoreWhenBetter, REFRESH_FRAMES, forget_after)


def _packet_observers(config: Config, restorer: SpecRestorer | None, report: ReportWriter | None):
    """(source_id, info) -> what the write stage shows its packets to: the report's best-shot
    collector, and in overlay mode each track's best shot as its inset; None when neither."""
    overlay = config.compositing.mode == "overlay"
    if report is None and not overlay:
        return None

    def make(source_id: str, info: StreamInfo) -> BestShots | BestShotInsets:
        if report is not None:
            shots = report.observer(source_id, info)
        else:
            shots = BestShots(
                info,
                discard,
                top_n=1,
                crop_scale=restorer.spec.crop_scale if restorer else 1.5,
                end_after_frames=track_end_frames(config.tracking.max_missed, config.detection.every_n_frames),
            )
        return BestShotInsets(shots) if overlay else shots

    return make


def _gate_factory(config: Config, restorer: SpecRestorer | None):
    """One restore gate per source, with its own RetinaFace session (None: nothing to gate)."""
    settings = config.verification
    if restorer is None or not settings.enabled:
        if restorer is not None:
            logger.warning("restore gate: off (verification.enabled is false): every detected face is restored")
        return None
    options = GateOptions(**settings.model_dump(), max_face_px=config.restoration.max_face_px)
    logger.info(
        "restore gate: score >= %.2f, keypoints %s, second opinion %s, %d passed checks per track",
        options.min_score,
        "on" if options.keypoints else "off",
        f"RetinaFace >= {options.second_opinion_min_score:.2f}" if options.second_opinion else "off",
        options.confirm_checks,
    )

    def make_gate() -> RestoreGate:
        return RestoreGate(options, RetinaFaceModel() if options.second_opinion else None)

    return make_gate


def _crop_faces(config: Config, restorer: SpecRestorer | None):
    if restorer is None:
        return None
    return functools.partial(prepare_crops, spec=restorer.spec, max_face_px=config.restoration.max_face_px)


def pipeline_settings(config: Config, limits: CaptureLimits) -> PipelineSettings:
    return PipelineSettings(
        every_n_frames=config.detection.every_n_frames,
        batching=Batching(config.restoration.batch_size, config.restoration.max_latency_ms / 1000.0),
        queue_size=config.pipeline.queue_size,
        live_queue_size=config.pipeline.live_queue_size,
        live_drop=config.pipeline.live_drop,
        limits=limits,
        status_interval_s=config.logging.status_interval_s,
        camera=CameraPolicy(
            restart_initial_s=config.source.reconnect_initial_s,
            restart_max_s=config.source.reconnect_max_s,
            required=config.source.required,
            give_up_after_s=config.source.give_up_after_s,
            stale_after_s=min(config.health.no_frame_s, config.source.read_timeout_s),
        ),
        warn_down_s=config.health.warn_down_s,
    )


def recording_options(config: Config) -> RecordingOptions:
    recording = config.recording
    return RecordingOptions(
        segment_s=recording.segment_s,
        format=recording.format,
        on_resize=recording.on_resize,
        max_age_s=recording.max_age_h * 3600.0,
        max_total_bytes=int(recording.max_total_gb * 1e9),
    )


def load_restorer(config: Config) -> TorchScriptRestorer | None:
    settings = config.restoration
    if not settings.enabled:
        logger.info("restorer: off (restoration.enabled is false): faces are detected but not restored")
        return None
    restorer = TorchScriptRestorer.load(
        settings.model_path(),
        device=settings.device,
        fp16=settings.fp16,
        bf16=settings.bf16,
        threads=settings.threads or None,
        max_batch=settings.batch_size,
    )
    spec = restorer.spec
    if spec.target_index != spec.frames - 1:
        # The per-track windows end at the current frame (causal); a model restoring an older frame of its
        # window would paste that frame's face over this one.
        raise ContractError(
            f"{settings.model_path()}: restores frame {spec.target_index} of {spec.frames}; the "
            f"pipeline feeds causal windows and needs target_index = frames - 1 = {spec.frames - 1}"
        )
    return restorer


def _make_detector(config: Config) -> MediaPipeFaceDetector | AdaptiveSearch:
    """The source's detector; with tiling on and the adaptive policy, wrapped in the policy that
    decides where it looks (the detect stage asks it every frame)."""
    detection = config.detection
    options = TilingOptions.from_config(detection.tiling)
    detector = MediaPipeFaceDetector(detection.model_path(), detection.min_score, options, detection.min_face_px)
    if options is None or detection.search.policy != "adaptive":
        return detector
    search = detection.search
    budget = SearchBudget(search.budget_ms, search.call_ms, search.still_rescan_s)
    return AdaptiveSearch(detector, options, budget, detection.every_n_frames)


def _log_detection(config: Config) -> None:
    detection, tiling = config.detection, config.detection.tiling
    logger.info(
        "detector: %s (min score %.2f, every %d frames), tiling %s",
        detection.model_path().name,
        detection.min_score,
        detection.every_n_frames,
        f"on ({tiling.tile_size} px tiles, {tiling.overlap} px overlap, search {_search_summary(detection)})"
        if tiling.enabled
        else "off",
    )


def _search_summary(detection) -> str:
    search = detection.search
    if search.policy != "adaptive":
        return "every tile"
    budget = "a quarter of every tile's" if search.budget_ms is None else f"{search.budget_ms:g} ms/frame"
    return f"adaptive, budget {budget}"


def _sink_options(config: Config) -> SinkOptions:
    output = config.output
    if output.codec == "ffv1":
        return dataclasses.replace(
            LOSSLESS_FILE_OPTIONS, copy_audio=output.copy_audio, transport=config.source.transport
        )
    return SinkOptions(
        codec=output.codec,
        crf=output.crf,
        preset=output.preset,
        copy_audio=output.copy_audio,
        transport=config.source.transport,
    )


def _compositor(config: Config):
    settings = config.compositing
    options = compositing.CompositeOptions(
        feather=settings.feather, inset_scale=settings.inset_scale, keep_brightness=settings.keep_brightness
    )
    return functools.partial(compositing.compose_touching, mode=settings.mode, options=options)


def with_own_stages(
    jobs: list[Job],
    configs: dict[str, Config],
    restorer: SpecRestorer | None,
    limits: CaptureLimits,
    report: ReportWriter | None = None,
) -> list[Job]:
    """The jobs, each with the stages and settings of its own config (a cameras file's cameras)
    around the one shared restorer (and the one report)."""
    return [
        dataclasses.replace(
            job,
            components=assemble_components(configs[job.source_id], restorer, report),
            settings=pipeline_settings(configs[job.source_id], limits),
        )
        for job in jobs
    ]
