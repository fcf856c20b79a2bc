"""A CCTV degradation model: what a camera, its encoder and the pipeline do to a face.

A degradation starts from a high-resolution *square crop* (the model contract's crop: a face box
scaled by `crop_scale`, so the face spans 1/crop_scale of the square) and ends with the very
`resize_square(low, S)` the pipeline applies when it crops a small face out of a frame.
The stages, in the order light and bits meet them:

1. optics: Gaussian defocus and linear motion blur (sizes given in *low-resolution* pixels),
2. sampling: downscale so the face box is `face_px` wide (area, bilinear or bicubic),
3. exposure: scene light and a colour cast in linear light, then the camera's partial auto-gain,
4. sensor noise: Poisson (shot) plus Gaussian (read) noise, per channel (colour) and shared (luma),
5. H.264 through PyAV/libx264 at a CRF (many crops of one CRF are tiled into one frame and coded
   together, intra-only, as a real encoder codes a frame full of macroblocks),
6. optionally JPEG (a snapshot export),
7. upscale to the model's input size with `model_contract.resize_square`.

Every random choice comes from a `numpy.random.Generator`, so a seed fixes the result.
Presets (`PRESETS`) are fixed severity ranges used for evaluation; `TRAINING_MIX` samples
presets for training, including `wide`, which spans all of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass

import av
import cv2
import numpy as np

from streamer.model_contract import resize_square

Range = tuple[float, float]

# H.264 works on 16x16 macroblocks; tiles are padded to a multiple of this so no block
# straddles two faces.
MACROBLOCK = 16
X264_PRESET = "veryfast"  # CCTV encoders are hardware encoders: fast, not efficient

DOWNSCALE_METHODS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class Severity:
    """Ranges that degradation parameters are drawn from (uniformly, per image).

    face_px: width of the face box after downscaling, in pixels of the (simulated) frame.
    blur_sigma: Gaussian defocus sigma in low-resolution pixels.
    motion_px: length of a straight motion-blur streak in low-resolution pixels (any angle).
    exposure: light reaching the sensor relative to what renders the face right (1 = a well-exposed
        face; < 1 a dark or backlit face; > 1 a face the camera over-exposes, e.g. a lit face against
        a dark scene). Daylight ranges straddle 1 so that a model cannot learn "always brighten":
        trained on one-sided (<= 1) ranges it brightened correctly exposed video faces by 4-6 levels.
    auto_gain: how much of the exposure error the camera's gain takes back (0 = none, 1 = all).
    color_cast: maximum relative change of the red/blue gains (white-balance error).
    shot_noise: Poisson noise strength, as the std in 8-bit levels at mid-grey and full gain.
    read_noise: Gaussian noise std in 8-bit levels.
    luma_noise_share: share of the noise that is equal in R, G and B (luma) rather than per channel.
    crf: H.264 constant rate factor (integer; higher = fewer bits, more blocks).
    jpeg_probability / jpeg_quality: chance and quality of a final JPEG round trip.
    """

    face_px: Range
    blur_sigma: Range
    motion_px: Range
    exposure: Range
    auto_gain: Range
    color_cast: float
    shot_noise: Range
    read_noise: Range
    luma_noise_share: Range
    crf: tuple[int, int]
    jpeg_probability: float
    jpeg_quality: tuple[int, int]


PRESETS: dict[str, Severity] = {
    # A well-lit face close to the camera, a good encoder.
    "mild": Severity(
        face_px=(40, 56),
        blur_sigma=(0.3, 0.6),
        motion_px=(0, 1),
        exposure=(0.8, 1.25),
        auto_gain=(0.8, 1.0),
        color_cast=0.03,
        shot_noise=(1, 2),
        read_noise=(1, 2),
        luma_noise_share=(0.3, 0.7),
        crf=(23, 27),
        jpeg_probability=0.0,
        jpeg_quality=(90, 95),
    ),
    # A typical CCTV face: ~20-28 px wide, slightly soft, visibly noisy, CRF ~32.
    "moderate": Severity(
        face_px=(20, 28),
        blur_sigma=(0.5, 1.0),
        motion_px=(0, 2),
        exposure=(0.6, 1.6),
        auto_gain=(0.7, 1.0),
        color_cast=0.06,
        shot_noise=(2, 4),
        read_noise=(2, 4),
        luma_noise_share=(0.3, 0.7),
        crf=(30, 34),
        jpeg_probability=0.2,
        jpeg_quality=(70, 90),
    ),
    # A distant face: 12-18 px, blurred, noisy, starved of bits.
    "severe": Severity(
        face_px=(12, 18),
        blur_sigma=(0.7, 1.4),
        motion_px=(0, 3),
        exposure=(0.5, 1.8),
        auto_gain=(0.6, 1.0),
        color_cast=0.08,
        shot_noise=(3, 6),
        read_noise=(3, 6),
        luma_noise_share=(0.3, 0.7),
        crf=(36, 40),
        jpeg_probability=0.3,
        jpeg_quality=(50, 80),
    ),
    # Night: a dark scene the gain only partly brightens, heavy shot noise, a colour cast.
    "night": Severity(
        face_px=(18, 30),
        blur_sigma=(0.5, 1.2),
        motion_px=(0, 3),
        exposure=(0.08, 0.25),
        auto_gain=(0.3, 0.7),
        color_cast=0.15,
        shot_noise=(4, 8),
        read_noise=(2, 5),
        luma_noise_share=(0.2, 0.6),
        crf=(32, 36),
        jpeg_probability=0.2,
        jpeg_quality=(60, 85),
    ),
    # A sharp camera: a face as small and as coded as `moderate`, but good optics and no motion, so
    # almost no blur beyond the sampling itself. A restorer that assumes blur over-sharpens these: the
    # stage-3 model, trained on blurred faces only, gained 0.00 dB over bicubic on `moderate` with the
    # blur off and lost 0.32 dB on faces only sampled (python -m training.ablation).
    "sharp": Severity(
        face_px=(20, 28),
        blur_sigma=(0.0, 0.25),
        motion_px=(0, 0.5),
        exposure=(0.6, 1.6),
        auto_gain=(0.7, 1.0),
        color_cast=0.06,
        shot_noise=(1, 3),
        read_noise=(1, 3),
        luma_noise_share=(0.3, 0.7),
        crf=(28, 34),
        jpeg_probability=0.2,
        jpeg_quality=(70, 90),
    ),
    # Training only: spans all presets (and a bit beyond) so the model sees every in-between case.
    "wide": Severity(
        face_px=(12, 64),
        blur_sigma=(0.2, 1.6),
        motion_px=(0, 4),
        exposure=(0.08, 1.8),
        auto_gain=(0.3, 1.0),
        color_cast=0.15,
        shot_noise=(0, 8),
        read_noise=(0, 6),
        luma_noise_share=(0.0, 1.0),
        crf=(20, 42),
        jpeg_probability=0.25,
        jpeg_quality=(40, 95),
    ),
}
EVAL_PRESETS = ("mild", "moderate", "severe", "night", "sharp")
# Training draws a preset per image: the evaluation presets plus `wide` for everything between them.
# This default is the mix of the shipped model's stages 1 and 2 (kept so they reproduce); later stages
# set their own (TrainConfig.training_mix), and stage 4's adds `sharp`.
TRAINING_MIX: dict[str, float] = {"mild": 0.1, "moderate": 0.25, "severe": 0.2, "night": 0.15, "wide": 0.3}


@dataclass(frozen=True)
class DegradeParams:
    """One image's concrete degradation, drawn from a Severity."""

    face_px: float
    downscale: str
    blur_sigma: float
    motion_px: float
    motion_angle_deg: float
    exposure: float
    auto_gain: float
    gains_rgb: tuple[float, float, float]
    shot_noise: float
    read_noise: float
    luma_noise_share: float
    crf: int
    jpeg_quality: int | None  # None: no JPEG round trip


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_params(severity: Severity, rng: np.random.Generator) -> DegradeParams:
    """Draw one image's parameters from `severity`'s ranges."""
    cast = severity.color_cast
    red, blue = 1.0 + rng.uniform(-cast, cast), 1.0 + rng.uniform(-cast, cast)
    use_jpeg = rng.random() < severity.jpeg_probability
    jpeg_quality = int(rng.integers(severity.jpeg_quality[0], severity.jpeg_quality[1] + 1))
    return DegradeParams(
        face_px=_uniform(rng, severity.face_px),
        downscale=str(rng.choice(list(DOWNSCALE_METHODS))),
        blur_sigma=_uniform(rng, severity.blur_sigma),
        motion_px=_uniform(rng, severity.motion_px),
        motion_angle_deg=_uniform(rng, (0.0, 180.0)),
        exposure=_uniform(rng, severity.exposure),
        auto_gain=_uniform(rng, severity.auto_gain),
        gains_rgb=(float(red), 1.0, float(blue)),
        shot_noise=_uniform(rng, severity.shot_noise),
        read_noise=_uniform(rng, severity.read_noise),
        luma_noise_share=_uniform(rng, severity.luma_noise_share),
        crf=int(rng.integers(severity.crf[0], severity.crf[1] + 1)),
        jpeg_quality=jpeg_quality if use_jpeg else None,
    )


def describe_presets(mix: dict[str, float] | None = None) -> dict:
    """The presets and the training mix (`mix`, default TRAINING_MIX) as plain data (for model metadata and reports)."""
    return {
        "presets": {name: asdict(severity) for name, severity in PRESETS.items()},
        "training_mix": dict(mix or TRAINING_MIX),
        "codec": f"H.264 libx264 preset={X264_PRESET}, intra, yuv420p, crops tiled on 16-px macroblocks",
    }


def fingerprint(*other_settings: dict) -> str:
    """A short hash of the presets, the mix and the codec settings, and of `other_settings` (e.g.
    training's augmentation): cached pairs are named with it, so editing a preset never trains or
    evaluates on pairs made by the old one."""
    text = json.dumps([describe_presets(), *other_settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# --- stage 1: optics ---------------------------------------------------------------------------


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel `length` pixels long at `angle_deg` (anti-aliased by supersampling)."""
    size = int(math.ceil(length)) | 1
    kernel = np.zeros((size * 4, size * 4), np.float32)
    centre = size * 2
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    half = length * 2
    start = (int(round(centre - dx * half)), int(round(centre - dy * half)))
    end = (int(round(centre + dx * half)), int(round(centre + dy * half)))
    cv2.line(kernel, start, end, 1.0, thickness=2)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def optical_blur(square: np.ndarray, params: DegradeParams, low_side: int) -> np.ndarray:
    """Blur the high-resolution square; sizes are given in low-resolution pixels, so scale them."""
    scale = square.shape[0] / low_side
    image = square.astype(np.float32)
    if params.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=params.blur_sigma * scale)
    if params.motion_px >= 1.0:
        image = cv2.filter2D(
            image, -1, motion_kernel(params.motion_px * scale, params.motion_angle_deg), borderType=cv2.BORDER_REPLICATE
        )
    return image


# --- stage 2: sampling -------------------------------------------------------------------------


def low_side_for(face_px: float, crop_scale: float) -> int:
    """Side of the square in the simulated frame when the face box is `face_px` wide."""
    return max(4, int(round(face_px * crop_scale)))


def downscale(image: np.ndarray, side: int, method: str) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=DOWNSCALE_METHODS[method])


# --- stages 3 + 4: exposure and sensor noise ---------------------------------------------------

GAMMA = 2.2


def expose_and_add_noise(image: np.ndarray, params: DegradeParams, rng: np.random.Generator) -> np.ndarray:
    """Low light, white-balance error and sensor noise, modelled in linear light.

    `image` is float32 in 0..255 (sRGB-like). The scene is dimmed by `exposure`, photons arrive
    with Poisson statistics, the sensor adds read noise, then the camera's gain restores a part
    (`auto_gain`) of the missing brightness, amplifying the noise with it."""
    linear = (np.clip(image, 0, 255) / 255.0) ** GAMMA
    linear = linear * params.exposure * np.asarray(params.gains_rgb, np.float32)
    gain = params.exposure**-params.auto_gain
    # Noise std in linear units at the sensor so that it reads as ~`shot_noise` levels at mid-grey.
    shot_scale = (params.shot_noise / 255.0) ** 2 / gain**2
    if shot_scale > 0:
        photons = rng.poisson(np.clip(linear, 0, None) / shot_scale).astype(np.float32)
        shot = photons * shot_scale - linear
        linear = linear + _mix_colour_and_luma(shot, params.luma_noise_share)
    read = rng.normal(0.0, params.read_noise / 255.0 / gain, size=linear.shape).astype(np.float32)
    linear = linear + _mix_colour_and_luma(read, params.luma_noise_share)
    encoded = np.clip(linear * gain, 0, 1) ** (1.0 / GAMMA)
    return np.clip(encoded * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _mix_colour_and_luma(noise: np.ndarray, luma_share: float) -> np.ndarray:
    """Blend per-channel noise with its channel mean (noise equal in R, G, B) keeping the std."""
    luma = noise.mean(axis=2, keepdims=True) * math.sqrt(3.0)
    return (math.sqrt(1.0 - luma_share) * noise + math.sqrt(luma_share) * luma).astype(np.float32)


# --- stage 5: H.264 ----------------------------------------------------------------------------


def _tile_grid(count: int) -> tuple[int, int]:
    cols = int(math.ceil(math.sqrt(count)))
    return int(math.ceil(count / cols)), cols


def h264_roundtrip(images: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """Code `images` (small HxWx3 uint8, any sizes) as one intra H.264 frame at `crf` and decode.

    Each image sits at the top-left of a cell padded (edge-replicated) to a multiple of 16 px,
    so macroblocks align with the face crop as they would with a frame's grid, and yuv420p's even
    sizes are met; the padding is cut off again after decoding."""
    cell = max(max(img.shape[0], img.shape[1]) for img in images)
    cell = int(math.ceil(cell / MACROBLOCK)) * MACROBLOCK
    rows, cols = _tile_grid(len(images))
    mosaic = np.zeros((rows * cell, cols * cell, 3), np.uint8)
    for index, img in enumerate(images):
        r, c = divmod(index, cols)
        h, w = img.shape[:2]
        padded = cv2.copyMakeBorder(img, 0, cell - h, 0, cell - w, cv2.BORDER_REPLICATE)
        mosaic[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = padded
    decoded = _encode_decode_frame(mosaic, crf)
    out = []
    for index, img in enumerate(images):
        r, c = divmod(index, cols)
        h, w = img.shape[:2]
        out.append(np.ascontiguousarray(decoded[r * cell : r * cell + h, c * cell : c * cell + w]))
    return out


def _encode_decode_frame(image: np.ndarray, crf: int) -> np.ndarray:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        stream.options = {"crf": str(crf), "preset": X264_PRESET, "g": "1", "threads": "1"}
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    with av.open(buffer, "r", format="h264") as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


# --- stage 6: JPEG -----------------------------------------------------------------------------


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to JPEG-encode an image")
    return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])


# --- the whole chain ---------------------------------------------------------------------------


def sensor_image(square: np.ndarray, params: DegradeParams, crop_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Stages 1-4: what the camera's sensor delivers for the square (low resolution, uint8)."""
    side = low_side_for(params.face_px, crop_scale)
    blurred = optical_blur(square, params, side)
    return expose_and_add_noise(downscale(blurred, side, params.downscale), params, rng)


def degrade_batch(
    squares: list[np.ndarray], severity: Severity | str, rng: np.random.Generator, size: int, crop_scale: float
) -> tuple[np.ndarray, list[DegradeParams]]:
    """Degrade high-resolution square crops (HxHx3 uint8 RGB) into N x size x size x 3 model inputs.

    Images that drew the same CRF are coded together (one H.264 frame), so a batch is far faster
    than one image at a time; the result depends on the batch only through those shared frames."""
    if isinstance(severity, str):
        severity = PRESETS[severity]
    params = [sample_params(severity, rng) for _ in squares]
    sensed = [sensor_image(square, p, crop_scale, rng) for square, p in zip(squares, params)]
    coded: list[np.ndarray | None] = [None] * len(squares)
    for crf in sorted({p.crf for p in params}):
        members = [i for i, p in enumerate(params) if p.crf == crf]
        for i, img in zip(members, h264_roundtrip([sensed[i] for i in members], crf)):
            coded[i] = img
    out = np.empty((len(squares), size, size, 3), np.uint8)
    for i, (img, p) in enumerate(zip(coded, params)):
        if p.jpeg_quality is not None:
            img = jpeg_roundtrip(img, p.jpeg_quality)
        out[i] = resize_square(img, size)
    return out, params


def degrade(
    square: np.ndarray, severity: Severity | str, rng: np.random.Generator, size: int, crop_scale: float
) -> np.ndarray:
    """Degrade one high-resolution square crop into a size x size x 3 uint8 model input."""
    out, _ = degrade_batch([square], severity, rng, size, crop_scale)
    return out[0]


def sample_training_presets(count: int, rng: np.random.Generator, mix: dict[str, float] | None = None) -> list[str]:
    """Preset names for `count` training images, drawn from `mix` (preset -> weight; default TRAINING_MIX)."""
    mix = mix or TRAINING_MIX
    unknown = set(mix) - set(PRESETS)
    if unknown:
        raise ValueError(f"training mix names unknown presets {sorted(unknown)}; presets are {', '.join(PRESETS)}")
    names = list(mix)
    weights = np.asarray([mix[n] for n in names], np.float64)
    return [names[i] for i in rng.choice(len(names), size=count, p=weights / weights.sum())]
