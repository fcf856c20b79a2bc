"""The degradation ablation: each variant switches off its stage, and each stage costs bicubic PSNR."""

from __future__ import annotations

import dataclasses

from streamer.model_contract import RestorerSpec
from tests.helpers.faces import require_faces
from training import ablation, baselines, degrade, evaluate

MODERATE = degrade.PRESETS["moderate"]


def changed_fields(variant: str) -> set[str]:
    ablated = ablation.VARIANTS[variant](MODERATE)
    return {f.name for f in dataclasses.fields(MODERATE) if getattr(ablated, f.name) != getattr(MODERATE, f.name)}


def test_each_variant_switches_off_only_its_own_stage():
    assert changed_fields("as is") == set()
    assert changed_fields("no optical blur") == {"blur_sigma", "motion_px"}
    assert changed_fields("no sensor noise") == {"shot_noise", "read_noise"}
    assert changed_fields("no exposure error") == {"exposure", "color_cast"}
    assert changed_fields("lossless codec") == {"crf", "jpeg_probability"}
    assert changed_fields("sampling only") == set().union(*(changed_fields(v) for v in list(ablation.VARIANTS)[1:5]))


def test_blur_and_the_codec_each_cost_bicubic_psnr_and_sampling_alone_costs_least():
    require_faces()
    records = evaluate.evaluation_records(12)
    results = ablation.ablate(
        records,
        "moderate",
        {"bicubic": baselines.bicubic, "ours": baselines.bicubic},
        RestorerSpec(input_size=64, crop_scale=1.5),
    )
    bicubic = {variant: row["bicubic"] for variant, row in results.items()}
    assert bicubic["no optical blur"] > bicubic["as is"] + 0.5
    assert bicubic["lossless codec"] > bicubic["as is"] + 0.5
    assert bicubic["sampling only"] == max(bicubic.values())
    table = ablation.format_table(results, "moderate", len(records))
    assert len(table.splitlines()) == 2 + len(ablation.VARIANTS) and "+0.00" in table
