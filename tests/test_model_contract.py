"""The crop geometry and metadata that training and the pipeline share."""

import numpy as np
import pytest
import torch

from streamer.model_contract import (
    ContractError,
    RestorerSpec,
    batch_to_crops,
    crops_to_batch,
    cut_square,
    extract_crop,
    square_crop_box,
)
from streamer.values import Box

IMAGE = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)


def test_the_crop_square_is_centred_on_the_face_and_scaled_from_its_longer_side():
    square = square_crop_box(Box(100, 50, 20, 30), crop_scale=1.5)
    assert (square.w, square.h) == (45, 45)
    assert square.center == pytest.approx(Box(100, 50, 20, 30).center, abs=0.5)


def test_a_square_inside_the_image_is_cut_exactly():
    assert np.array_equal(cut_square(IMAGE, Box(2, 3, 4, 4)), IMAGE[3:7, 2:6])


@pytest.mark.parametrize(
    "square, expected_edge",
    [
        (Box(-5, -5, 8, 8), IMAGE[0, 0]),  # over the top-left corner: the corner pixel repeats
        (Box(20, 3, 6, 6), IMAGE[3, 11]),  # wholly right of the image: its last column repeats
        (Box(-30, -30, 6, 6), IMAGE[0, 0]),  # wholly outside, above-left
    ],
)
def test_parts_outside_the_image_repeat_its_border(square, expected_edge):
    crop = cut_square(IMAGE, square)
    assert crop.shape == (int(square.w), int(square.w), 3)
    assert np.array_equal(crop[0, 0], expected_edge)


def test_extract_crop_gives_the_model_size():
    assert extract_crop(IMAGE, Box(-2, -2, 9, 9), 64).shape == (64, 64, 3)


def test_tensor_layout_round_trips_uint8_crops():
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    batch = crops_to_batch(crops)
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == torch.float32 and float(batch.max()) <= 1.0
    assert torch.equal(batch_to_crops(batch), crops)


def test_spec_metadata_round_trips():
    spec = RestorerSpec(input_size=64, crop_scale=1.5, training={"data": "CelebA"})
    assert RestorerSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not valid JSON"),
        ('{"input_size": 64}', "lacks"),
        ('{"input_size": 64, "crop_scale": 1.5, "colour": "RGB"}', "unknown keys"),
        ('{"input_size": 8, "crop_scale": 1.5}', "input_size"),
        ('{"input_size": 64, "crop_scale": 9}', "crop_scale"),
        ('{"input_size": 64, "crop_scale": 1.5, "color_order": "BGR"}', "color_order"),
        ('{"input_size": 64, "crop_scale": 1.5, "value_range": [0, 255]}', "value_range"),
    ],
)
def test_a_broken_spec_is_a_contract_error_naming_the_problem(text, message):
    with pytest.raises(ContractError, match=message):
        RestorerSpec.from_json(text)
