"""The investigator's report: a folder with every tracked face's best shots and a processing record.

    REPORT/
      index.html            self-contained (inline CSS and JS, no network): one card per track,
                            filters by camera and time, every kept shot on a click, the record
      run.json              the processing record: software and git commit, model and its SHA-256,
                            the full effective config and its hash, input hashes, counts, errors
      tracks.jsonl          one JSON line per track (for other tools), appended as tracks end
      shots/CAM/track_NNNN/ per kept shot: fNNNNNN_original.png (the crop at the frame's own
                            resolution), fNNNNNN_original_xK.png (enlarged K times, nearest
                            neighbour), fNNNNNN_enhanced.png (the model's output at its own size),
                            fNNNNNN.json (the sidecar: source and hash, frame, pts, time, box,
                            score parts, model hash, restorer summary, settings hash)

Evidence practice: originals are never labelled or altered; every restored image is shown with
an "ENHANCED" label and its file name says so; PNG is lossless. Sidecars and crops hold no
run-time clock for recorded files, so the same input, model and config give byte-identical
shots (run.json holds the run's timestamps). The report folder is checked before any model
loads: an existing one needs --overwrite, an unwritable one is an error.

Live sources: tracks are appended as they end, index.html is rewritten atomically (temporary
file + rename) at most every `refresh_s`, and `max_tracks` / `max_age_s` bound the disk.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import platform
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamer import REPO_ROOT
from streamer.best_shots import WEIGHTS, BestShots, Shot, TrackRecord, track_end_frames
from streamer.report_folder import MARKER_FILE, ReportError
from streamer.report_html import render_index
from streamer.values import Box, StreamInfo

logger = logging.getLogger(__name__)

REPORT_FORMAT = 1
TRACK_QUEUE = 64  # ended tracks waiting for the writer thread (then the write stage waits: bounded memory)
PNG_COMPRESSION = 1  # zlib level: lossless at any level; 1 encodes ~1.4x faster than 6 for ~20 % more bytes
ENLARGED_PX = 192  # the nearest-neighbour view of an original is at least this wide
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReportSettings:
    folder: Path
    top_n: int = 3
    refresh_s: float = 5.0  # index.html is rewritten at most this often while tracks end
    max_tracks: int = 0  # keep at most this many tracks on disk, the oldest go first (0: all)
    max_age_s: float = 0.0  # drop tracks that ended longer ago than this (0: never)
    end_after_frames: int = 30  # a track not seen for this many frames has ended (the tracker dropped it)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:  # read only: the evidence is never opened for writing
        for chunk in iter(lambda: stream.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def settings_hash(config: dict) -> str:
    """SHA-256 of the processing settings: the effective config as canonical JSON (sorted keys, no
    spaces) without where things are (source.inputs, report.folder), which do not change a result."""
    settings = json.loads(json.dumps(config))
    settings.get("source", {}).pop("inputs", None)
    settings.get("report", {}).pop("folder", None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def software_record() -> dict[str, Any]:
    """Versions of what processed the evidence, and the git commit of this code (None outside git)."""
    record: dict[str, Any] = {"python": platform.python_version()}
    for module in ("torch", "av", "mediapipe", "cv2", "numpy"):
        try:
            record[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            record[module] = None
    record["version"] = _git("describe", "--always", "--dirty")  # the code's version: its commit (+ "-dirty")
    record["git_commit"] = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    record["git_dirty"] = None if status is None else bool(status)
    return record


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass(frozen=True)
class ModelFacts:
    """What restored the faces: the file, its hash, and a summary of its restorer.json."""

    path: str | None
    sha256: str | None
    restorer: dict[str, Any] | None

    @classmethod
    def of(cls, path: Path | None, spec: Any | None) -> ModelFacts:
        if path is None or spec is None:
            return cls(None, None, None)
        return cls(str(path.name), sha256_file(path), restorer_summary(spec))


def restorer_summary(spec: Any) -> dict[str, Any]:
    """The contract fields of a RestorerSpec and the headline facts of its training record."""
    training = dict(getattr(spec, "training", {}) or {})
    summary = {
        "input_size": spec.input_size,
        "crop_scale": spec.crop_scale,
        "color_order": spec.color_order,
        "value_range": list(spec.value_range),
    }
    for key in ("data", "licence", "steps", "validation_metrics"):
        if key in training:
            summary[key] = training[key]
    if "architecture" in training:
        summary["architecture"] = {k: v for k, v in training["architecture"].items() if k != "config"}
    return summary


class _Source:
    """One input of the run: its label and (for files, hashed in the background) its SHA-256."""

    def __init__(
        self, source_id: str, label: str, path: str, info: StreamInfo | None, hasher: concurrent.futures.Executor
    ) -> None:
        self.source_id, self.label, self.info = source_id, label, info
        self.is_file = os.path.isfile(path)
        self.path = os.path.abspath(path) if self.is_file else None
        self.sha256 = hasher.submit(sha256_file, path) if self.is_file else None

    def record(self) -> dict[str, Any]:
        return {
            "camera": self.source_id,
            "input": self.label,
            "path": self.path,
            "live": not self.is_file,
            "sha256": self.sha256.result() if self.sha256 is not None else None,
        }


class ReportWriter:
    """Writes the report as tracks end. Thread-safe: every source's write thread calls it."""

    def __init__(
        self,
        settings: ReportSettings,
        config: dict[str, Any],
        model: ModelFacts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.config, self.model, self.clock = settings, config, model, clock
        self.folder = settings.folder
        self.settings_sha256 = settings_hash(config)
        self._lock = threading.RLock()
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="report-hash")
        self._sources: dict[str, _Source] = {}
        self._tracks: list[dict[str, Any]] = []  # the tracks on disk, in the order they ended
        self._errors: list[str] = []
        self._frame_hashes: list[dict[str, str]] = []
        self._counts: dict[str, Any] = {}
        self._started = clock()
        self._written_at = 0.0
        self._tracks_on_page = -1  # tracks index.html shows (-1: no page yet)
        self._status = "running"
        self._software = software_record()
        self._failure: ReportError | None = None
        self._queue: queue.Queue = queue.Queue(TRACK_QUEUE)
        self._write_record()
        self._writer = threading.Thread(target=self._drain, name="report-writer", daemon=True)
        self._writer.start()

    # ---- what the pipeline calls -------------------------------------------------------------

    def add_source(self, source_id: str, label: str, path: str) -> None:
        """Name an input before its frames arrive (files are hashed in the background)."""
        with self._lock:
            if source_id not in self._sources:
                self._sources[source_id] = _Source(source_id, label, path, None, self._hasher)

    def observer(self, source_id: str, info: StreamInfo) -> BestShots:
        """A per-source best-shot collector whose ended tracks come here (Components.make_observer)."""
        crop_scale = float(self.model.restorer["crop_scale"]) if self.model.restorer else 1.5
        return BestShots(
            info,
            self.add_track,
            top_n=self.settings.top_n,
            end_after_frames=self.settings.end_after_frames,
            crop_scale=crop_scale,
            clock=self.clock,
        )

    def close_after(self, results: Sequence[Any], interrupted: bool) -> None:
        """Finish with the jobs' results (batch.JobResult): counts, each failed input's error."""
        runs = {id(result.stats): result.stats.as_dict() for result in results if result.stats is not None}
        for result in results:
            if result.error:
                self.add_error(f"{result.job.label}: {result.error}")
        failed = any(result.error for result in results)
        status = "interrupted" if interrupted else "failed" if failed else "complete"
        self.finish(status, counts_from_runs(list(runs.values())))

    def close_after_error(self, exc: BaseException) -> None:
        """The run stopped on an error: record it; the page says the report is incomplete."""
        self.add_error(f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyboardInterrupt) else "interrupted")
        try:
            self.finish("failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted", {})
        except ReportError as report_error:
            logger.error("%s", report_error)

    def add_track(self, track: TrackRecord) -> None:
        """Queue an ended track for the writer thread (PNG encoding stays off the pipeline's write
        stage); waits only when TRACK_QUEUE tracks are already waiting. A failed write is raised here."""
        self._raise_failure()
        self._queue.put(track)

    def flush(self) -> None:
        """Wait until every queued track is on disk; raise the writer's failure, if any."""
        self._queue.join()
        self._raise_failure()

    def _drain(self) -> None:
        while True:
            try:
                track = self._queue.get(timeout=self.settings.refresh_s)
            except queue.Empty:  # no track ended for a while: let the page catch up with those that did
                self._refresh_if_behind()
                continue
            try:
                if track is None:
                    return
                with self._lock:
                    if self._failure is None:
                        self._store_track(track)
            except ReportError as exc:
                self._failure = exc
            finally:
                self._queue.task_done()

    def _refresh_if_behind(self) -> None:
        with self._lock:
            if self._failure is not None or len(self._tracks) == self._tracks_on_page:
                return
            try:
                self._write_index()
            except OSError as exc:
                try:
                    self._fail(exc)
                except ReportError as failure:
                    self._failure = failure

    def _store_track(self, track: TrackRecord) -> None:
        try:
            entry = self._write_track(track)
            self._tracks.append(entry)
            with open(self.folder / "tracks.jsonl", "a", encoding="utf-8") as stream:
                stream.write(json.dumps(entry, sort_keys=True) + "\n")
            self._enforce_limits()
            if self.clock() - self._written_at >= self.settings.refresh_s:
                self._write_index()
        except OSError as exc:
            self._fail(exc)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def add_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def add_frame_hashes(self, paths: Sequence[str], errors: Sequence[str]) -> None:
        """The --frame-hashes files (FFmpeg framemd5 of each input's decoded frames), and their errors."""
        with self._lock:
            self._frame_hashes = [{"file": path, "sha256": sha256_file(path)} for path in paths]
            self._errors.extend(errors)

    def finish(self, status: str, counts: dict[str, Any]) -> None:
        """Write the queued tracks, the final record and index (status: complete, failed or interrupted)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        self._raise_failure()
        with self._lock:
            self._status, self._counts = status, counts
            try:
                self._write_record()
                self._write_index()
            except OSError as exc:
                self._fail(exc)
            finally:
                self._hasher.shutdown(wait=False)

    @property
    def track_count(self) -> int:
        return len(self._tracks)

    # ---- files -------------------------------------------------------------------------------

    def _write_track(self, track: TrackRecord) -> dict[str, Any]:
        relative = Path("shots") / track.source_id / track.key
        (self.folder / relative).mkdir(parents=True, exist_ok=True)
        source = self._source(track.source_id)
        shots = [self._write_shot(relative, rank, shot, source) for rank, shot in enumerate(track.shots, start=1)]
        return {
            "camera": track.source_id,
            "input": source.label,
            "track_id": track.track_id,
            "segment": track.segment,
            "key": track.key,
            "folder": relative.as_posix(),
            "first_frame": track.first_frame,
            "last_frame": track.last_frame,
            "first_time_s": _rounded(track.first_time_s),
            "last_time_s": _rounded(track.last_time_s),
            "first_wall_clock": track.first_wall_clock,
            "last_wall_clock": track.last_wall_clock,
            "frames": track.frames,
            "best_score": shots[0]["score"]["total"] if shots else None,
            "shots": shots,
        }

    def _write_shot(self, folder: Path, rank: int, shot: Shot, source: _Source) -> dict[str, Any]:
        stem = f"f{shot.frame_index:06d}"
        factor = max(2, -(-ENLARGED_PX // shot.original.shape[1]))
        original, enlarged_name = f"{stem}_original.png", f"{stem}_original_x{factor}.png"
        enhanced = f"{stem}_enhanced.png" if shot.restored is not None else None
        files = {"original": original, "original_enlarged": enlarged_name, "enhanced": enhanced}
        _write_png(self.folder / folder / original, shot.original)
        enlarged = cv2.resize(shot.original, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
        _write_png(self.folder / folder / enlarged_name, enlarged)
        if shot.restored is not None and enhanced is not None:
            _write_png(self.folder / folder / enhanced, shot.restored)
        sidecar = {
            "report_format": REPORT_FORMAT,
            "camera": shot.source_id,
            "source": source.record(),
            "track_id": shot.track_id,
            "rank": rank,
            "frame_index": shot.frame_index,
            "pts": shot.pts,
            "time_s": _rounded(shot.time_s),
            "box": _box(shot.box),
            "crop_box": _box(shot.crop_box),
            "score": shot.parts.as_dict(),
            "score_weights": WEIGHTS,
            "files": {**files, "enlarge_factor": factor, "folder": folder.as_posix()},
            "enhanced": None
            if shot.restored is None
            else {
                "label": "ENHANCED: produced by a neural network; not what the camera recorded",
                "model": self.model.path,
                "model_sha256": self.model.sha256,
                "restorer": self.model.restorer,
                "size": list(shot.restored.shape[:2]),
            },
            "settings_sha256": self.settings_sha256,
        }
        if shot.wall_clock is not None:
            sidecar["wall_clock"] = shot.wall_clock
        _write_atomic(self.folder / folder / f"{stem}.json", json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        return {
            "rank": rank,
            "frame_index": shot.frame_index,
            "time_s": _rounded(shot.time_s),
            "wall_clock": shot.wall_clock,
            "score": shot.parts.as_dict(),
            "box": _box(shot.box),
            "sidecar": (folder / f"{stem}.json").as_posix(),
            **{name: (folder / value).as_posix() if value else None for name, value in files.items()},
        }

    def _source(self, source_id: str) -> _Source:
        if source_id not in self._sources:  # not announced: a source the writer learns of by its tracks
            self._sources[source_id] = _Source(source_id, source_id, "", None, self._hasher)
        return self._sources[source_id]

    def _enforce_limits(self) -> None:
        """Drop the oldest tracks beyond max_tracks or older than max_age_s (live disk bound)."""
        keep = list(self._tracks)
        if self.settings.max_tracks > 0:
            keep = keep[-self.settings.max_tracks :]
        if self.settings.max_age_s > 0:
            now = self.clock()
            keep = [
                t for t in keep if t["last_wall_clock"] is None or now - t["last_wall_clock"] <= self.settings.max_age_s
            ]
        if len(keep) == len(self._tracks):
            return
        kept_folders = {t["folder"] for t in keep}
        for track in self._tracks:
            if track["folder"] not in kept_folders:
                shutil.rmtree(self.folder / track["folder"], ignore_errors=True)
        self._tracks = keep
        _write_atomic(self.folder / "tracks.jsonl", "".join(json.dumps(t, sort_keys=True) + "\n" for t in keep))

    def _record(self) -> dict[str, Any]:
        return {
            "report_format": REPORT_FORMAT,
            "status": self._status,
            "started_utc": _utc(self._started),
            "finished_utc": _utc(self.clock()) if self._status != "running" else None,
            "software": self._software,
            "model": {"file": self.model.path, "sha256": self.model.sha256, "restorer": self.model.restorer},
            "settings_sha256": self.settings_sha256,
            "config": self.config,
            "inputs": [source.record() for source in self._sources.values()]
            if self._status != "running"
            else [{"camera": s.source_id, "input": s.label} for s in self._sources.values()],
            "counts": {**self._counts, "tracks": len(self._tracks)},
            "frame_hashes": list(self._frame_hashes),
            "errors": list(self._errors),
            "score": {"weights": WEIGHTS, "top_n": self.settings.top_n},
        }

    def _write_record(self) -> None:
        _write_atomic(self.folder / MARKER_FILE, json.dumps(self._record(), indent=2, sort_keys=True) + "\n")

    def _write_index(self) -> None:
        _write_atomic(self.folder / "index.html", render_index(self._record(), self._tracks))
        self._written_at = self.clock()
        self._tracks_on_page = len(self._tracks)

    def _fail(self, exc: OSError) -> None:
        """A write failed (disk full, folder removed): leave no page that looks finished, and stop."""
        for name in ("index.html",):
            try:
                (self.folder / name).unlink()
            except OSError:
                pass
        raise ReportError(f"{self.folder}: cannot write the report ({exc.strerror or exc})") from None


def open_report(config: Any, jobs: Sequence[Any], components: Any, folder: Path) -> ReportWriter:
    """The report writer of a run: `config` (config.Config), `jobs` (pipeline.Job) and the loaded
    `components` (pipeline.Components, whose restorer has the spec) say what to record."""
    restorer = components.restorer
    model_path = config.restoration.model_path() if restorer is not None else None
    settings = ReportSettings(
        folder=folder,
        top_n=config.report.top_n,
        refresh_s=config.report.refresh_s,
        max_tracks=config.report.max_tracks,
        max_age_s=config.report.max_age_s,
        end_after_frames=track_end_frames(config.tracking.max_missed, config.detection.every_n_frames),
    )
    writer = ReportWriter(
        settings, config.model_dump(mode="json"), ModelFacts.of(model_path, getattr(restorer, "spec", None))
    )
    for job in jobs:
        writer.add_source(job.source_id, job.label, job.input)
    logger.info("report: %s (best %d shots per track)", folder, settings.top_n)
    return writer


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    )
    if not ok:
        raise OSError(f"cannot encode {path.name}")
    _write_atomic(path, data.tobytes())


def _write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError:
        try:
            temporary.unlink()
        except OSError:
            pass
        raise


def _box(box: Box) -> dict[str, float]:
    return {"x": round(box.x, 3), "y": round(box.y, 3), "w": round(box.w, 3), "h": round(box.h, 3)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def counts_from_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Frame and face totals over the pipeline runs' JSON (batch.results_as_json), and the failed jobs."""
    totals = {"frames_in": 0, "frames_out": 0, "faces": 0, "restored_faces": 0, "drops": 0, "corrupt_packets": 0}
    for run in runs:
        sources = run.get("sources") or []
        for source in sources.values() if isinstance(sources, dict) else sources:
            for key in totals:
                totals[key] += int(source.get(key, 0) or 0)
    return totals
