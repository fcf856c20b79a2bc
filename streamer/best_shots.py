"""Best shots: the few best views of each tracked face, ranked by a documented quality score.

An investigator wants, for every person in the footage, the best view enlarged beside the
original. This module watches the packets the write stage composites (frame + tracked faces +
restored crops), scores every face, keeps the top N shots of each track in memory (a few small
crops per live track, nothing else), and hands a finished `TrackRecord` to a callback when a
track ends: when it has not been seen for `end_after_frames` frames, or at the end of the stream.

The quality score (`score_face`), every part in [0, 1]:
- size:      the face box's longer side / SIZE_FULL_PX (capped at 1): bigger faces hold more detail.
- detector:  the detector's confidence (the tracker carries the last one between detections).
- sharpness: variance of the Laplacian of the face box's grey pixels (native resolution),
             mapped to [0, 1) by v / (v + SHARPNESS_HALF): motion blur and defocus score low.
- frontal:   from MediaPipe's keypoints: 1 when the nose tip sits midway between the eyes, falling
             to 0 when it is level with one eye (a profile); NO_KEYPOINTS_FRONTAL without keypoints.
- edge:      the share of the model's crop square that lies inside the frame (a face cut by the
             frame edge is partly invented border pixels), squared so a half-cut face scores 0.25.
total = edge x (WEIGHTS . (size, detector, sharpness, frontal)); the weights sum to 1.
Ties go to the earlier frame, so the same input always keeps the same shots. A track's kept shots
are at least MIN_GAP_S apart (a better shot within the gap replaces the one it is near): consecutive
frames would give three copies of one view.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from streamer.model_contract import cut_square, square_crop_box
from streamer.values import Box, Face, FramePacket, StreamInfo

SIZE_FULL_PX = 64.0  # a face this wide (or wider) gets the full size part
SHARPNESS_HALF = 100.0  # the Laplacian variance that scores 0.5
NO_KEYPOINTS_FRONTAL = 0.5  # frontalness when the detector gave no keypoints: unknown
WEIGHTS = {"size": 0.35, "detector": 0.15, "sharpness": 0.25, "frontal": 0.25}
DEFAULT_TOP_N = 3
MIN_GAP_S = 0.5  # a track's kept shots are at least this far apart in time: three views, not one view thrice
REFRESH_FRAMES = 25  # overlay: a track's face is restored at least this often, best view or not (RestoreWhenBetter)


@dataclass(frozen=True)
class ScoreParts:
    size: float
    detector: float
    sharpness: float
    frontal: float
    edge: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in self.__dict__.items()}


def score_face(image: np.ndarray, face: Face, crop_box: Box) -> ScoreParts:
    """The quality parts of one face in its frame (see the module docstring)."""
    height, width = image.shape[:2]
    size = min(1.0, max(face.box.w, face.box.h) / SIZE_FULL_PX)
    detector = float(min(1.0, max(0.0, face.score)))
    sharpness = _sharpness(image, face.box)
    frontal = frontalness(face.keypoints)
    edge = _inside_share(crop_box, width, height) ** 2
    weighted = (
        WEIGHTS["size"] * size
        + WEIGHTS["detector"] * detector
        + WEIGHTS["sharpness"] * sharpness
        + WEIGHTS["frontal"] * frontal
    )
    return ScoreParts(size, detector, sharpness, frontal, edge, edge * weighted)


def frontalness(keypoints: tuple[tuple[float, float], ...]) -> float:
    """1 for a face looking at the camera, 0 for a profile: how far the nose tip (keypoint 2) is
    from the midpoint of the eyes (keypoints 0 and 1), in half eye distances."""
    if len(keypoints) < 3:
        return NO_KEYPOINTS_FRONTAL
    (rx, ry), (lx, ly), (nx, ny) = keypoints[:3]
    half_eyes = math.hypot(lx - rx, ly - ry) / 2.0
    if half_eyes <= 1e-6:
        return 0.0
    # The nose's offset along the eye line (tilting the head sideways moves it across, not along).
    ux, uy = (lx - rx) / (2.0 * half_eyes), (ly - ry) / (2.0 * half_eyes)
    along = (nx - (rx + lx) / 2.0) * ux + (ny - (ry + ly) / 2.0) * uy
    return float(max(0.0, 1.0 - abs(along) / half_eyes))


def _sharpness(image: np.ndarray, box: Box) -> float:
    height, width = image.shape[:2]
    x0, y0 = max(0, int(box.x)), max(0, int(box.y))
    x1, y1 = min(width, math.ceil(box.x + box.w)), min(height, math.ceil(box.y + box.h))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0.0
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    variance = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    return variance / (variance + SHARPNESS_HALF)


def _inside_share(box: Box, width: int, height: int) -> float:
    ix = max(0.0, min(box.x + box.w, width) - max(box.x, 0.0))
    iy = max(0.0, min(box.y + box.h, height) - max(box.y, 0.0))
    return ix * iy / box.area


@dataclass(frozen=True)
class Shot:
    """One kept view of a tracked face."""

    source_id: str
    track_id: int
    frame_index: int
    pts: int | None
    time_s: float | None  # pts in seconds from the start of the source
    wall_clock: float | None  # UNIX time the frame was written (live sources only)
    box: Box
    crop_box: Box  # the square the model sees (and the original crop shows)
    parts: ScoreParts
    original: np.ndarray = field(repr=False)  # crop_box at the frame's own resolution
    restored: np.ndarray | None = field(default=None, repr=False)  # the model's output, its own size


@dataclass(frozen=True)
class TrackRecord:
    """A track that ended: when it was seen and its best shots, best first."""

    source_id: str
    track_id: int
    segment: int  # 1, or 2, 3... when a track id comes back after it was flushed
    first_frame: int
    last_frame: int
    first_time_s: float | None
    last_time_s: float | None
    first_wall_clock: float | None
    last_wall_clock: float | None
    frames: int  # frames the track was seen in
    shots: tuple[Shot, ...]

    @property
    def key(self) -> str:
        """A name unique within the source: 'track_0005' (or 'track_0005_2' for a later segment)."""
        return f"track_{self.track_id:04d}" + (f"_{self.segment}" if self.segment > 1 else "")


@dataclass(frozen=True)
class Sighting:
    frame_index: int
    time_s: float | None
    wall_clock: float | None


class _TrackShots:
    """The top N shots of one live track (a min-heap: the worst kept shot is first to go)."""

    def __init__(self, track_id: int, segment: int, top_n: int, first: Sighting, min_gap: int = 1) -> None:
        self.track_id, self.segment, self.top_n, self.min_gap = track_id, segment, top_n, min_gap
        self.heap: list[tuple[float, int, Shot]] = []  # (total, -frame_index, shot)
        self.first = self.last = first
        self.frames = 0
        self.last_seen = 0  # the collector's frame counter when the track was last seen

    def admit(self, total: float, frame_index: int) -> list[tuple[float, int, Shot]] | None:
        """None: a shot scoring `total` is not kept. Else the kept shots it replaces: those less
        than `min_gap` frames from it (it must beat them all: near-duplicates make one shot), or
        none (it joins the top N, pushing out the worst when full)."""
        key = (total, -frame_index)
        near = [entry for entry in self.heap if abs(-entry[1] - frame_index) < self.min_gap]
        if near:
            return near if key > max(entry[:2] for entry in near) else None
        if len(self.heap) < self.top_n or key > self.heap[0][:2]:
            return []
        return None

    def keep(self, shot: Shot, replaced: list[tuple[float, int, Shot]]) -> None:
        if replaced:
            self.heap = [entry for entry in self.heap if all(entry is not old for old in replaced)]
            heapq.heapify(self.heap)
        entry = (shot.parts.total, -shot.frame_index, shot)
        if len(self.heap) < self.top_n:
            heapq.heappush(self.heap, entry)
        else:
            heapq.heapreplace(self.heap, entry)

    def best(self) -> Shot | None:
        return max(self.heap, key=lambda entry: entry[:2])[2] if self.heap else None

    def ranked(self) -> tuple[Shot, ...]:
        return tuple(entry[2] for entry in sorted(self.heap, key=lambda entry: entry[:2], reverse=True))


class BestShots:
    """Per source: scores every tracked face of every packet and keeps each track's top N shots.

    `on_track_end(record)` is called (in the caller's thread) for each track that ends, and for
    every remaining track at `close()`. Memory: N small crops per live track."""

    def __init__(
        self,
        info: StreamInfo,
        on_track_end: Callable[[TrackRecord], None],
        top_n: int = DEFAULT_TOP_N,
        end_after_frames: int = 30,
        crop_scale: float = 1.5,
        clock: Callable[[], float] = time.time,
        min_gap_s: float = MIN_GAP_S,
    ) -> None:
        if top_n < 1:
            raise ValueError(f"BestShots: top_n must be >= 1, got {top_n}")
        self.info, self.on_track_end, self.top_n = info, on_track_end, top_n
        self.end_after_frames, self.crop_scale, self.clock = end_after_frames, crop_scale, clock
        # Kept shots of a track are at least this many frames apart (consecutive frames are near-duplicates).
        self.min_gap_frames = max(1, round(float(info.rate or 0) * min_gap_s))
        self._tracks: dict[int, _TrackShots] = {}
        self._segments: dict[int, int] = {}  # track id -> segments flushed so far
        self._frames = 0
        self.tracks_ended = 0

    def observe(self, packet: FramePacket) -> FramePacket:
        """Score the packet's faces (keeping the best shots); the packet itself goes on unchanged."""
        self._frames += 1
        frame = packet.frame
        time_s = float(frame.pts * frame.time_base) if frame.pts is not None else None
        wall_clock = self.clock() if self.info.is_live else None
        for face in packet.faces:
            if face.track_id >= 0:
                self._observe_face(packet, face, time_s, wall_clock)
        self._end_quiet_tracks()
        return packet

    def best(self, track_id: int) -> Shot | None:
        """The best shot so far of a live track (None when it has none)."""
        track = self._tracks.get(track_id)
        return track.best() if track is not None else None

    def close(self) -> None:
        """End every track (the stream ended); call once."""
        for track_id in sorted(self._tracks):
            self._end(track_id)

    def _observe_face(self, packet: FramePacket, face: Face, time_s: float | None, wall_clock: float | None) -> None:
        frame = packet.frame
        sighting = Sighting(frame.index, time_s, wall_clock)
        track = self._tracks.get(face.track_id)
        if track is None:
            segment = self._segments.get(face.track_id, 0) + 1
            track = self._tracks[face.track_id] = _TrackShots(
                face.track_id, segment, self.top_n, sighting, self.min_gap_frames
            )
        track.frames += 1
        track.last_seen = self._frames
        track.last = sighting
        crop_box = face.crop_box or square_crop_box(face.box, self.crop_scale)
        parts = score_face(frame.image, face, crop_box)
        replaced = track.admit(parts.total, frame.index)
        if replaced is None:
            return  # most faces end here: scored, nothing copied
        track.keep(
            Shot(
                source_id=frame.source_id,
                track_id=face.track_id,
                frame_index=frame.index,
                pts=frame.pts,
                time_s=time_s,
                wall_clock=wall_clock,
                box=face.box,
                crop_box=crop_box,
                parts=parts,
                original=cut_square(frame.image, crop_box).copy(),
                restored=None if face.restored is None else np.array(face.restored, copy=True),
            ),
            replaced,
        )

    def _end_quiet_tracks(self) -> None:
        quiet = [
            track_id
            for track_id, track in self._tracks.items()
            if self._frames - track.last_seen > self.end_after_frames
        ]
        for track_id in sorted(quiet):
            self._end(track_id)

    def _end(self, track_id: int) -> None:
        track = self._tracks.pop(track_id)
        self._segments[track_id] = track.segment
        self.tracks_ended += 1
        self.on_track_end(
            TrackRecord(
                source_id=self.info.source_id,
                track_id=track_id,
                segment=track.segment,
                first_frame=track.first.frame_index,
                last_frame=track.last.frame_index,
                first_time_s=track.first.time_s,
                last_time_s=track.last.time_s,
                first_wall_clock=track.first.wall_clock,
                last_wall_clock=track.last.wall_clock,
                frames=track.frames,
                shots=track.ranked(),
            )
        )


class BestShotInsets:
    """Overlay mode's observer: every face is shown with its track's best restored view so far
    (its best shot), so the operator's inset holds the clearest face seen, not the latest. A
    best shot without a restored view (its face was not restored: RestoreWhenBetter, or a frame
    dropped on the way) gives way to the track's latest restored view."""

    def __init__(self, shots: BestShots) -> None:
        self.shots = shots
        self._latest: dict[int, np.ndarray] = {}  # live track -> its latest restored view

    def observe(self, packet: FramePacket) -> FramePacket:
        packet = self.shots.observe(packet)
        for face in packet.faces:
            if face.track_id >= 0 and face.restored is not None:
                self._latest[face.track_id] = face.restored
        faces = tuple(self._best_view(face) for face in packet.faces)
        # Ended tracks' views go (BestShots forgets them): one small crop per live track.
        self._latest = {track: view for track, view in self._latest.items() if self.shots.best(track) is not None}
        return dataclasses.replace(packet, faces=faces)

    def close(self) -> None:
        self.shots.close()

    def _best_view(self, face: Face) -> Face:
        best = self.shots.best(face.track_id) if face.track_id >= 0 else None
        view = best.restored if best is not None and best.restored is not None else self._latest.get(face.track_id)
        return face if view is None else dataclasses.replace(face, restored=view)


class RestoreWhenBetter:
    """Overlay mode shows each face with its track's best restored view so far (BestShotInsets),
    so restoring a face that does not beat that view is work no one sees. The detect stage's
    filter, one per source: a face keeps its crop (is restored) when its score (`score_face`,
    what BestShots ranks by) beats every earlier face of its track, or when its track has had no
    face restored for `refresh_frames` frames (an inset is never older than that, whatever the
    write stage dropped); any other face loses its crop, is not restored and keeps its pixels.
    On a walking crowd most faces do not beat their track's best: bench/pipeline_bench.py
    --latency prints how many were restored."""

    def __init__(self, refresh_frames: int = REFRESH_FRAMES, forget_after_frames: int = 30) -> None:
        if refresh_frames < 1 or forget_after_frames < 1:
            raise ValueError("RestoreWhenBetter: refresh_frames and forget_after_frames must be >= 1")
        self.refresh_frames, self.forget_after_frames = refresh_frames, forget_after_frames
        self._best: dict[int, float] = {}  # track -> its best score so far
        self._restored_at: dict[int, int] = {}  # track -> the frame count when a face of it was last restored
        self._seen_at: dict[int, int] = {}
        self._frames = 0
        self.skipped = 0  # faces not restored: they did not beat their track's best view

    def select(self, image: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """The faces, those not worth restoring without their crop."""
        self._frames += 1
        selected = [self._selected(image, face) for face in faces]
        self._forget_ended_tracks()
        return selected

    def _selected(self, image: np.ndarray, face: Face) -> Face:
        if face.crop is None or face.crop_box is None or face.track_id < 0:
            return face
        track = face.track_id
        self._seen_at[track] = self._frames
        total = score_face(image, face, face.crop_box).total
        stale = self._frames - self._restored_at.get(track, -self.refresh_frames) >= self.refresh_frames
        if total > self._best.get(track, -1.0) or stale:
            self._best[track] = max(total, self._best.get(track, -1.0))
            self._restored_at[track] = self._frames
            return face
        self.skipped += 1
        return dataclasses.replace(face, crop=None)

    def _forget_ended_tracks(self) -> None:
        ended = [track for track, seen in self._seen_at.items() if self._frames - seen > self.forget_after_frames]
        for track in ended:
            del self._seen_at[track], self._best[track], self._restored_at[track]


def track_end_frames(max_missed: int, every_n_frames: int) -> int:
    """Frames after which a track not seen has ended: the tracker drops a track after
    max_missed + 1 detection rounds without it; one more round of margin."""
    return (max_missed + 2) * every_n_frames


def discard(track: TrackRecord) -> None:
    """An on_track_end that keeps nothing (overlay mode without a report)."""
