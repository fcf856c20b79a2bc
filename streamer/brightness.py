"""Brightness: in a well-lit frame, a restored face keeps the brightness of the face it replaces.

The restorer sees only its crop. Trained to undo under- and over-exposure, it must guess a face's
true brightness from the crop alone, and a dark face in daylight (dark skin, a head turned away,
a box drifting over dark hair or clothes) looks just like an under-exposed one. On the crowd
video check (training/video_check.py) the model brightened such faces by 13-14 grey levels and
lost 2-5 dB on them. The whole frame tells what the crop cannot: when the frame is well lit, the
camera's exposure is right, so each face keeps its own brightness and colour balance and the
model contributes only detail (less noise, blur and blocking). When the frame is dark (night),
relighting is what the user wants, and the model's output is kept as it is. Between the two, the
share of the face's brightness that is kept ramps linearly.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer.model_contract import Region

# Mean frame luma (0-255), set from the degradation presets (training/degrade.py): a scene as
# bright as the crowd video (106 when well exposed) measures 100-114 under the daylight presets'
# exposures and 56-82 under night's (5th-95th percentiles). Between the two the model's relighting
# is kept: at night it is worth +6 dB, against a few tenths of a dB for keeping a daylight face's
# brightness (evaluation, `ours_pasted` at `moderate`), so an unsure frame is better relit. The
# shared videos measure 101-129, the bundled sample 91.
DARK_FRAME_LUMA = 80.0  # at or below: the model relights faces as it sees fit
LIT_FRAME_LUMA = 100.0  # at or above: faces keep their own brightness
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, on RGB


def frame_luma(image: np.ndarray) -> float:
    """Mean luma (0-255) of an H x W x 3 RGB frame (~0.15 ms for 1080p: the mean of a weighted sum
    is the weighted sum of the channel means)."""
    return float(np.array(cv2.mean(image)[:3]) @ _LUMA_WEIGHTS)


def kept_share(luma: float) -> float:
    """How much of a face's own brightness to keep in a frame of this mean luma: 0 in a dark frame,
    1 in a lit one."""
    return float(np.clip((luma - DARK_FRAME_LUMA) / (LIT_FRAME_LUMA - DARK_FRAME_LUMA), 0.0, 1.0))


def keep_face_brightness(crop: np.ndarray, restored: np.ndarray, face: Region, share: float) -> np.ndarray:
    """`restored` with each colour channel scaled so that the mean over the face region moves
    `share` of the way (in log gain) from the model's back to the input crop's.

    A gain per channel keeps the model's detail (its contrast around the mean) and undoes only
    its change of brightness and colour balance; measured on the face region, not the whole crop,
    so a bright background in the margin does not darken the face."""
    if share <= 0.0:
        return restored
    x0, y0, x1, y1 = face
    before = crop[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    after = restored[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    gains = (np.maximum(before, 1.0) / np.maximum(after, 1.0)) ** share
    return np.clip(restored.astype(np.float32) * gains.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
