"""Video check with ground truth: restore the faces of a video degraded as a CCTV camera would.

    python -m training.video_check                    # crowd_walk_1080p.mp4 -> 640x360, CRF 35
    python -m training.video_check --height 480 --crf 38

The original 1080p frames are the ground truth. The video is degraded frame by frame as a CCTV
camera and its encoder would: optical blur, downscaling (to 640 x 360 by default), sensor noise
(training/degrade.py's noise model), then H.264 at a high CRF with P-frames (a real stream,
encoded with PyAV). The pipeline's detector and tracker (configs/default.yaml: detection every
N frames, tracking in between) find the faces in the *degraded* video; each face is cropped from
the degraded frame by the pipeline's `prepare_crops`, restored (a face larger than
restoration.max_face_px keeps its pixels, as in the pipeline: "ours" is then the crop itself), and
compared with the same square cut from the original frame (its coordinates scaled up;
`resize_square` to S, as training's truth).

Reported, on each face's face region (`metrics.face_region_in_crop`), for bicubic (the crop
itself), "model" (the restorer's output) and "ours" (what the pipeline pastes: the model's output
with the face's own brightness kept as far as the frame's light says, `streamer.brightness`,
unless the config turns compositing.keep_brightness off):
- PSNR and SSIM against the truth;
- per track, the mean absolute frame-to-frame change of the face (8-bit levels) for the truth,
  each method, and the temporal error: mean |(x_t - x_t-1) - (truth_t - truth_t-1)|, the part
  of a face's change over time that the truth does not have (flicker).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from streamer import REPO_ROOT, SHARED_DATA, brightness, compositing
from streamer.components import build_components
from streamer.config import ConfigError, load_config
from streamer.model_contract import (
    ContractError,
    RestorerSpec,
    extract_crop,
    resize_square,
    square_crop_box,
)
from streamer.restoration import ModelLoadError, TorchScriptRestorer
from streamer.sources import SourceError, open_source
from streamer.track_window import TrackWindows
from streamer.values import Box, Face
from training import degrade, metrics
from training.evaluate import PresetRun, comparison_grid, save_png

log = logging.getLogger(__name__)

DEFAULT_VIDEO = SHARED_DATA / "videos" / "crowd_walk_1080p.mp4"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
DEFAULT_OUT_DIR = REPO_ROOT / "runs" / "video_check"
METHODS = ("bicubic", "model", "ours")  # ours: the model's output as the pipeline pastes it
MIN_TRACK_FRAMES = 5  # shorter tracks are listed in the totals but not one by one


@dataclass(frozen=True)
class CctvSettings:
    """How the camera degrades the video. Blur is in output pixels; noise in 8-bit levels."""

    height: int = 360
    blur_sigma: float = 0.7
    shot_noise: float = 3.0
    read_noise: float = 3.0
    crf: int = 35
    gop: int = 50  # a key frame every 2 s at 25 fps, as CCTV encoders do
    seed: int = 0

    def sensor(self) -> degrade.DegradeParams:
        """The settings as degrade.py parameters (daylight: no exposure loss, no colour cast)."""
        return degrade.DegradeParams(
            face_px=0.0,
            downscale="area",
            blur_sigma=self.blur_sigma,
            motion_px=0.0,
            motion_angle_deg=0.0,
            exposure=1.0,
            auto_gain=1.0,
            gains_rgb=(1.0, 1.0, 1.0),
            shot_noise=self.shot_noise,
            read_noise=self.read_noise,
            luma_noise_share=0.5,
            crf=self.crf,
            jpeg_quality=None,
        )


@dataclass(frozen=True)
class FaceSample:
    """One tracked face in one frame: its degraded crop, the truth crop and the face region."""

    track_id: int
    frame_index: int
    face_px: float  # the face box's longer side in the degraded frame
    crop: np.ndarray
    truth: np.ndarray
    region: metrics.Region
    restored: bool  # False: the pipeline leaves this face's pixels alone (restoration.max_face_px)
    frame_luma: float | None = None  # its frame's mean luma; None: compositing.keep_brightness is off


# --- degrading the video -----------------------------------------------------------------------


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """The RGB frames of a video file, through the pipeline's file source."""
    with open_source(str(path), "video-check") as source:
        for frame in source.frames(threading.Event()):
            yield frame.image


def degrade_frame(image: np.ndarray, settings: CctvSettings, rng: np.random.Generator) -> np.ndarray:
    """Optics, sampling and sensor noise of one frame (degrade.py's stages 1, 2 and 4)."""
    height, width = image.shape[:2]
    low_width = int(round(width * settings.height / height / 2)) * 2  # yuv420p needs even sizes
    params = settings.sensor()
    blurred = degrade.optical_blur(image, params, settings.height)
    low = cv2.resize(blurred, (low_width, settings.height), interpolation=cv2.INTER_AREA)
    return degrade.expose_and_add_noise(low, params, rng)


def write_degraded_video(source: Path, target: Path, settings: CctvSettings) -> int:
    """Degrade every frame of `source` and H.264-encode them to `target`; return the bit rate (bit/s)."""
    rng = np.random.default_rng(settings.seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as probe:
        rate = probe.streams.video[0].average_rate
    frames = 0
    with av.open(str(target), "w") as container:
        stream = None
        for image in read_frames(source):
            low = degrade_frame(image, settings, rng)
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = low.shape[1], low.shape[0], "yuv420p"
                stream.options = {"crf": str(settings.crf), "preset": degrade.X264_PRESET, "g": str(settings.gop)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(low, format="rgb24")):
                container.mux(packet)
            frames += 1
        for packet in stream.encode():
            container.mux(packet)
    return int(target.stat().st_size * 8 * float(rate) / max(1, frames))


# --- faces and their truth ---------------------------------------------------------------------


def scaled_box(box: Box, factor: float) -> Box:
    """`box` in the pixels of a frame `factor` times larger (whole pixels, like a crop box)."""
    return Box(*(float(round(v * factor)) for v in (box.x, box.y, box.w, box.h)))


def collect_faces(
    original: Path, degraded: Path, config_path: Path, model: Path | None
) -> tuple[list[FaceSample], TorchScriptRestorer]:
    """Detect, track and crop faces in the degraded video as the pipeline does; pair each crop with its truth.

    Returns the samples and the pipeline's restorer."""
    overrides = {"restoration.device": ("cpu", "--device")}
    if model is not None:
        overrides["restoration.model"] = (str(model), "--model")
    config = load_config(config_path, overrides)
    components = build_components(config)
    spec = components.restorer.spec
    keep_brightness = config.compositing.keep_brightness
    samples = []
    with components.make_detector() as detector:
        stage = components.detect_stage(detector, config.detection.every_n_frames)
        for index, (truth_frame, frame) in enumerate(zip(read_frames(original), read_frames(degraded), strict=True)):
            factor = truth_frame.shape[0] / frame.shape[0]
            luma = brightness.frame_luma(frame) if keep_brightness else None
            for face in stage.faces_in(frame, index):
                samples.append(_sample(face, index, frame, truth_frame, factor, spec, luma))
    return samples, components.restorer


def _sample(
    face: Face,
    index: int,
    frame: np.ndarray,
    truth_frame: np.ndarray,
    factor: float,
    spec: RestorerSpec,
    frame_luma: float | None,
) -> FaceSample:
    """A face as the pipeline cropped it; a face it leaves alone (too large) is cropped the same way,
    to be scored, and marked as not restored."""
    crop_box = face.crop_box or square_crop_box(face.box, spec.crop_scale)
    return FaceSample(
        track_id=face.track_id,
        frame_index=index,
        face_px=max(face.box.w, face.box.h),
        crop=face.crop if face.crop is not None else extract_crop(frame, crop_box, spec.input_size),
        truth=extract_crop(truth_frame, scaled_box(crop_box, factor), spec.input_size),
        region=metrics.face_region_in_crop(face.box, crop_box, spec.input_size),
        restored=face.crop is not None,
        frame_luma=frame_luma,
    )


def restore_with_model(samples: list[FaceSample], restorer: TorchScriptRestorer) -> np.ndarray:
    """The model's output for the faces the pipeline restores, the crop itself for the others.

    A K-frame model gets each face's window of its track's last K restored crops, as the pipeline's
    per-track windows give it (streamer.track_window; samples are in frame order)."""
    crops = np.stack([s.crop for s in samples])
    chosen = [i for i, s in enumerate(samples) if s.restored]
    outputs = crops.copy()
    if chosen:
        if restorer.spec.frames == 1:
            inputs = crops[chosen]
        else:
            windows = TrackWindows(restorer.spec.frames)
            inputs = np.stack([windows.push(samples[i].frame_index, samples[i].track_id, crops[i]) for i in chosen])
        restored = restorer.restore(inputs)
        if restored.shape[1:] != crops.shape[1:]:  # a super-resolving model: scored at the crop's size
            restored = np.stack([resize_square(r, crops.shape[1]) for r in restored])
        outputs[chosen] = restored
    return outputs


def as_the_pipeline_pastes(samples: list[FaceSample], model_outputs: np.ndarray) -> np.ndarray:
    """The model's outputs with each face's own brightness kept as the compositor keeps it."""
    return np.stack(
        [
            compositing.restored_as_pasted(s.crop, out, s.region, s.frame_luma)
            if s.restored and s.frame_luma is not None
            else out
            for s, out in zip(samples, model_outputs)
        ]
    )


# --- scores ------------------------------------------------------------------------------------


def frame_scores(samples: list[FaceSample], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per method, N x 2 face-region (PSNR, SSIM) of each sample against its truth."""
    return {
        method: np.array([metrics.face_scores(out, s.truth, s.region) for out, s in zip(images, samples)])
        for method, images in outputs.items()
    }


def temporal_scores(samples: list[FaceSample], outputs: dict[str, np.ndarray]) -> dict[int, dict]:
    """Per track: frames, median face size, and per method the mean frame-to-frame change of the
    face region and its temporal error against the truth's change (consecutive frames only)."""
    by_track: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        by_track.setdefault(sample.track_id, []).append(index)
    series = {
        "truth": np.stack([s.truth for s in samples]).astype(np.float32),
        **{method: images.astype(np.float32) for method, images in outputs.items()},
    }
    tracks = {}
    for track_id, members in by_track.items():
        pairs = [(a, b) for a, b in zip(members, members[1:]) if samples[b].frame_index == samples[a].frame_index + 1]
        entry = {"frames": len(members), "face_px": float(np.median([samples[i].face_px for i in members]))}
        for method, images in series.items():
            changes, errors = [], []
            for a, b in pairs:
                region = samples[b].region
                change = metrics.cut_region(images[b] - images[a], region)
                truth_change = metrics.cut_region(series["truth"][b] - series["truth"][a], region)
                changes.append(np.abs(change).mean())
                errors.append(np.abs(change - truth_change).mean())
            entry[method] = {"change": _mean(changes), "temporal_error": _mean(errors)}
        tracks[track_id] = entry
    return tracks


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(samples: list[FaceSample], outputs: dict[str, np.ndarray]) -> dict:
    scores = frame_scores(samples, outputs)
    tracks = temporal_scores(samples, outputs)
    totals = {}
    for method in outputs:
        flicker = [t[method]["temporal_error"] for t in tracks.values() if t[method]["temporal_error"] is not None]
        change = [t[method]["change"] for t in tracks.values() if t[method]["change"] is not None]
        totals[method] = {
            "psnr": float(scores[method][:, 0].mean()),
            "ssim": float(scores[method][:, 1].mean()),
            "change": _mean(change),
            "temporal_error": _mean(flicker),
        }
    truth_change = [t["truth"]["change"] for t in tracks.values() if t["truth"]["change"] is not None]
    totals["truth"] = {"change": _mean(truth_change)}
    for track_id, entry in tracks.items():
        members = [i for i, s in enumerate(samples) if s.track_id == track_id]
        for method in outputs:
            entry[method]["psnr"] = float(scores[method][members, 0].mean())
    return {"faces": len(samples), "tracks": len(tracks), "totals": totals, "per_track": tracks}


def format_tables(report: dict) -> str:
    totals = report["totals"]
    lines = [
        f"{report['faces']} face crops in {report['tracks']} tracks ({report['restored_faces']} restored, the "
        "others larger than restoration.max_face_px); "
        f"degraded video {report['degraded']['bitrate_kbps']} kbit/s",
        f"{'method':<16} {'PSNR dB':>8} {'SSIM':>7} {'change':>7} {'temporal err':>12}",
    ]
    for method in [*METHODS, *(m for m in totals if m not in METHODS and m != "truth")]:
        t = totals[method]
        lines.append(
            f"{method:<16} {t['psnr']:>8.2f} {t['ssim']:>7.4f} {t['change']:>7.2f} {t['temporal_error']:>12.2f}"
        )
    lines.append(f"{'truth':<16} {'':>8} {'':>7} {totals['truth']['change']:>7.2f}")
    lines.append("")
    lines.append(
        f"{'track':>5} {'frames':>6} {'face px':>7} {'PSNR bic':>8} {'PSNR model':>10} {'PSNR ours':>9} "
        f"{'chg truth':>9} {'chg bic':>7} {'chg ours':>8} {'terr bic':>8} {'terr ours':>9}"
    )
    for track_id, t in sorted(report["per_track"].items()):
        if t["frames"] < MIN_TRACK_FRAMES or t["truth"]["change"] is None:
            continue
        lines.append(
            f"{track_id:>5} {t['frames']:>6} {t['face_px']:>7.1f} "
            f"{t['bicubic']['psnr']:>8.2f} {t['model']['psnr']:>10.2f} {t['ours']['psnr']:>9.2f} "
            f"{t['truth']['change']:>9.2f} {t['bicubic']['change']:>7.2f} {t['ours']['change']:>8.2f} "
            f"{t['bicubic']['temporal_error']:>8.2f} {t['ours']['temporal_error']:>9.2f}"
        )
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------------------


def track_grid(
    samples: list[FaceSample], outputs: dict[str, np.ndarray], tracks: int = 4, frames: int = 3
) -> np.ndarray:
    """Comparison grid (evaluate.comparison_grid) of a few frames of the longest tracks."""
    by_track: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        by_track.setdefault(sample.track_id, []).append(index)
    longest = sorted(by_track.items(), key=lambda item: -len(item[1]))[:tracks]
    runs = {
        f"track {track_id}": PresetRun(
            inputs=outputs["bicubic"][members],
            truths=np.stack([samples[i].truth for i in members]),
            outputs={method: images[members] for method, images in outputs.items()},
        )
        for track_id, members in longest
    }
    return comparison_grid(runs, faces_per_preset=frames)


def run(
    video: Path,
    settings: CctvSettings,
    config: Path,
    model: Path | None,
    out_dir: Path,
    also: dict[str, Path] | None = None,
) -> dict:
    """The check; `also` (name -> model file): more restorers scored on the very same faces, each
    as pasted ("pasted:<name>"), so models compare on one detection run."""
    degraded = out_dir / f"{video.stem}_cctv_{settings.height}p_crf{settings.crf}.mp4"
    bitrate = write_degraded_video(video, degraded, settings)
    samples, restorer = collect_faces(video, degraded, config, model)
    if not samples:
        raise SourceError(f"{degraded}: the detector found no faces in the degraded video")
    model_outputs = restore_with_model(samples, restorer)
    outputs = {
        "bicubic": np.stack([s.crop for s in samples]),
        "model": model_outputs,
        "ours": as_the_pipeline_pastes(samples, model_outputs),
    }
    for name, path in (also or {}).items():
        other = TorchScriptRestorer.load(path, device="cpu")
        if (other.spec.input_size, other.spec.crop_scale) != (restorer.spec.input_size, restorer.spec.crop_scale):
            raise ContractError(f"{path}: another crop contract than the config's model; cannot score the same crops")
        outputs[f"pasted:{name}"] = as_the_pipeline_pastes(samples, restore_with_model(samples, other))
    report = summarise(samples, outputs)
    report["restored_faces"] = sum(s.restored for s in samples)
    save_png(track_grid(samples, outputs), out_dir / "grid.png")
    report["degraded"] = {"file": str(degraded), "bitrate_kbps": round(bitrate / 1000), **vars(settings)}
    report["video"] = str(video)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    defaults = CctvSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--height", type=int, default=defaults.height, help="degraded frame height (px)")
    parser.add_argument("--crf", type=int, default=defaults.crf)
    parser.add_argument("--blur", type=float, default=defaults.blur_sigma, help="Gaussian sigma in degraded px")
    parser.add_argument("--noise", type=float, default=defaults.read_noise, help="shot and read noise (8-bit levels)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config (detector, tracker)")
    parser.add_argument("--model", type=Path, default=None, help="restorer (default: the config's)")
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="more restorers to score on the same faces, as pasted",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    also = dict(item.split("=", 1) for item in args.also)
    settings = CctvSettings(
        height=args.height, blur_sigma=args.blur, shot_noise=args.noise, read_noise=args.noise, crf=args.crf
    )
    try:
        report = run(
            args.video, settings, args.config, args.model, args.out, {name: Path(path) for name, path in also.items()}
        )
    except (SourceError, ConfigError, ModelLoadError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_tables(report))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'report.json'} and {args.out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
