"""The last K crops of each tracked face: what a K-frame restorer sees (model contract v2).

One `TrackWindows` per source (camera or file), fed in frame order by that source's detect stage:
two cameras' tracks never share a window even when their tracker ids collide. For every face
that has a crop, `push` appends the crop to its track's window and returns the window, oldest
first, K crops long; a track younger than K repeats its oldest crop at the front (the model sees
a still face rather than another track's pixels or black). Live input stays causal: the window
ends at the current frame.

Memory is bounded twice: a track not seen for `max_missing_frames` frames has ended and is
evicted, and at most `max_tracks` windows are kept (the least recently seen go first), so a
crowd of short-lived tracks holds at most max_tracks x K crops.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Sequence

import numpy as np

from streamer.values import Face

DEFAULT_MAX_MISSING_FRAMES = 30
DEFAULT_MAX_TRACKS = 256


class TrackWindows:
    def __init__(
        self, frames: int, max_missing_frames: int = DEFAULT_MAX_MISSING_FRAMES, max_tracks: int = DEFAULT_MAX_TRACKS
    ) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames = frames
        self.max_missing_frames = max_missing_frames
        self.max_tracks = max_tracks
        # track id -> (frame index last seen, its last crops); ordered by last seen, oldest first
        self._tracks: OrderedDict[int, tuple[int, deque[np.ndarray]]] = OrderedDict()
        self._last_frame = -1

    def __len__(self) -> int:
        return len(self._tracks)

    def push(self, frame_index: int, track_id: int, crop: np.ndarray) -> np.ndarray:
        """Add `crop` (S x S x 3) as the newest crop of `track_id` at `frame_index`; the window,
        K x S x S x 3, oldest first. An untracked face (id < 0) gets a window of its crop alone."""
        if frame_index < self._last_frame:
            raise ValueError(f"frames must come in order: {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        if track_id < 0:
            return np.repeat(crop[None], self.frames, axis=0)
        entry = self._tracks.pop(track_id, None)
        crops = entry[1] if entry is not None else deque(maxlen=self.frames)
        if crops and crops[-1].shape != crop.shape:
            crops.clear()  # another model size: the old crops cannot be stacked with it
        crops.append(crop)
        self._tracks[track_id] = (frame_index, crops)
        self._evict(frame_index)
        return self.window(crops)

    def window(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        padding = [crops[0]] * (self.frames - len(crops))
        return np.stack([*padding, *crops])

    def end_frame(self, frame_index: int) -> None:
        """Evict the tracks that ended by `frame_index` (call once per frame, faces or not)."""
        self._last_frame = max(self._last_frame, frame_index)
        self._evict(frame_index)

    def _evict(self, frame_index: int) -> None:
        while self._tracks:
            oldest_id, (seen, _) = next(iter(self._tracks.items()))
            if frame_index - seen <= self.max_missing_frames and len(self._tracks) <= self.max_tracks:
                break
            del self._tracks[oldest_id]

    def faces_with_windows(self, frame_index: int, faces: Sequence[Face]) -> list[Face]:
        """`faces` with `window` set for each face that has a crop; ends the frame."""
        out = []
        for face in faces:
            if face.crop is None:
                out.append(face)
            else:
                out.append(dataclasses.replace(face, window=self.push(frame_index, face.track_id, face.crop)))
        self.end_frame(frame_index)
        return out
