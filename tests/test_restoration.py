"""Face restoration: contract checks at load, batching, crops, and that a model's output is used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.model_contract import ContractError, RestorerSpec, square_crop_box
from streamer.restoration import ModelLoadError, TorchScriptRestorer, prepare_crops
from streamer.values import Box, Face
from tests.helpers.models import BRIGHTEN_BY, TEST_INPUT_SIZE, make_spec, save_model

S = TEST_INPUT_SIZE


def random_crops(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, size=(count, S, S, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("models")
    return {kind: save_model(kind, folder / f"{kind}.ts") for kind in ("identity", "brighten")}


@pytest.mark.parametrize("count", [0, 1, 5, 16, 37])
def test_n_crops_in_n_crops_out_unchanged_by_identity(models, count):
    restorer = TorchScriptRestorer.load(models["identity"], device="cpu", max_batch=16)
    crops = random_crops(count)
    restored = restorer.restore(crops)
    assert restored.shape == crops.shape and restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, crops)


def test_brighten_model_brightens(models):
    restorer = TorchScriptRestorer.load(models["brighten"], device="cpu")
    crops = random_crops(4)
    restored = restorer.restore(crops)
    expected = np.clip(crops.astype(int) + round(BRIGHTEN_BY * 255), 0, 255)
    assert np.abs(restored.astype(int) - expected).max() <= 1


def test_bf16_request_still_restores(models):
    restorer = TorchScriptRestorer.load(models["brighten"], device="cpu", bf16=True)
    crops = random_crops(3)
    assert (restorer.restore(crops).astype(int) > crops.astype(int)).mean() > 0.9


def test_spec_comes_from_the_model_file(models):
    restorer = TorchScriptRestorer.load(models["identity"], device="cpu")
    assert restorer.spec == make_spec()


def test_wrong_crop_shape_is_rejected(models):
    restorer = TorchScriptRestorer.load(models["identity"], device="cpu")
    with pytest.raises(ValueError, match="expected N x 32 x 32 x 3 uint8"):
        restorer.restore(np.zeros((2, S + 1, S + 1, 3), np.uint8))


def write_garbage(path):
    path.write_bytes(b"not a model at all")
    return path


def write_state_dict(path):
    torch.save({"weight": torch.zeros(3)}, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "missing.ts", ModelLoadError, "not found"),
        (lambda p: write_garbage(p / "garbage.ts"), ModelLoadError, "not a TorchScript"),
        (lambda p: write_state_dict(p / "weights.pt"), ModelLoadError, "not a TorchScript"),
        (lambda p: save_model("identity", p / "no_spec.ts", with_spec=False), ContractError, "no restorer.json"),
        (lambda p: save_model("identity", p / "bad_spec.ts", spec='{"input_size": 32}'), ContractError, "lacks"),
        (
            lambda p: save_model("half_size", p / "half.ts"),
            ContractError,
            r"output shape 2 x 3 x 16 x 16 for a 2 x 3 x 32",
        ),
        (lambda p: save_model("fixed_input_16", p / "fixed.ts"), ContractError, "forward fails on a 2 x 3 x 32 x 32"),
        (lambda p: save_model("bytes", p / "bytes.ts"), ContractError, "output range"),
    ],
    ids=[
        "missing",
        "not-torchscript",
        "state-dict",
        "no-restorer-json",
        "incomplete-restorer-json",
        "wrong-output-shape",
        "wrong-input-size",
        "wrong-range",
    ],
)
def test_bad_model_files_give_one_line_errors_naming_the_file(tmp_path, make, error, message):
    path = make(tmp_path)
    with pytest.raises(error, match=message) as caught:
        TorchScriptRestorer.load(path, device="cpu")
    assert path.name in str(caught.value)
    assert "\n" not in str(caught.value)


# --- contract v2: K-frame windows and outputs of their own size -----------------------------------


@pytest.mark.parametrize(
    ("kind", "v2", "message"),
    [
        ("identity", {"frames": 3}, "forward fails on a 2 x 3 x 3 x 32 x 32 batch"),  # a 1-frame model says K=3
        ("window_oldest", {}, "output shape 2 x 32 x 32 for a 2 x 3 x 32 x 32 input"),  # a K-frame model says K=1
        ("identity", {"output_size": 64}, "output shape 2 x 3 x 32 x 32 .* asks for 2 x 3 x 64 x 64"),
        ("upscale_2x", {}, "output shape 2 x 3 x 64 x 64 .* asks for 2 x 3 x 32 x 32"),
    ],
    ids=["one-frame-model-declared-k3", "k-frame-model-declared-k1", "output-size-too-big", "output-size-missing"],
)
def test_a_model_whose_shapes_break_its_v2_metadata_fails_at_load_in_one_line(tmp_path, kind, v2, message):
    path = save_model(kind, tmp_path / f"{kind}.ts", make_spec(**v2))
    with pytest.raises(ContractError, match=message) as caught:
        TorchScriptRestorer.load(path, device="cpu")
    assert path.name in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("json_text", "message"),
    [
        ('{"input_size": 32, "crop_scale": 2, "frames": 0}', "frames must be an int in"),
        ('{"input_size": 32, "crop_scale": 2, "frames": 2.5}', "frames must be an int in"),
        (
            '{"input_size": 32, "crop_scale": 2, "frames": 3, "target_index": 3}',
            r"target_index must be an int in \[0, 2\]",
        ),
        ('{"input_size": 32, "crop_scale": 2, "output_size": 4}', "output_size must be an int"),
    ],
    ids=["frames-0", "frames-float", "target-index-out-of-window", "output-size-tiny"],
)
def test_bad_v2_metadata_is_a_one_line_error_naming_the_file(tmp_path, json_text, message):
    path = save_model("identity", tmp_path / "bad_v2.ts", spec=json_text)
    with pytest.raises(ContractError, match=message) as caught:
        TorchScriptRestorer.load(path, device="cpu")
    assert "bad_v2.ts" in str(caught.value) and "\n" not in str(caught.value)


def test_a_one_frame_model_without_v2_keys_loads_as_before(models):
    spec = TorchScriptRestorer.load(models["identity"], device="cpu").spec
    assert (spec.frames, spec.target_index, spec.output_size) == (1, 0, S)
    older = RestorerSpec.from_json('{"input_size": 32, "crop_scale": 2.0}')  # a restorer.json from before v2
    assert (older.frames, older.target_index, older.output_size) == (1, 0, 32)


def test_a_k_frame_model_restores_windows(tmp_path):
    restorer = TorchScriptRestorer.load(
        save_model("window_oldest", tmp_path / "k3.ts", make_spec(frames=3)), device="cpu", max_batch=4
    )
    windows = np.random.default_rng(1).integers(0, 255, (6, 3, S, S, 3), dtype=np.uint8)
    restored = restorer.restore(windows)
    assert restored.shape == (6, S, S, 3)
    np.testing.assert_array_equal(restored, windows[:, 0])
    with pytest.raises(ValueError, match="expected N x 3 x 32 x 32 x 3"):
        restorer.restore(windows[:, 0])  # single crops for a 3-frame model


def test_a_super_resolving_model_returns_its_own_size(tmp_path):
    restorer = TorchScriptRestorer.load(
        save_model("upscale_2x", tmp_path / "sr.ts", make_spec(output_size=2 * S)), device="cpu"
    )
    assert restorer.restore(random_crops(3)).shape == (3, 2 * S, 2 * S, 3)
    assert restorer.restore(random_crops(0)).shape == (0, 2 * S, 2 * S, 3)


def test_prepare_crops_uses_the_contract_crop(models):
    spec = make_spec()
    image = np.random.default_rng(1).integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    faces = [Face(Box(40, 30, 20, 20), 0.9, track_id=1), Face(Box(-5, 100, 16, 16), 0.8, track_id=2)]
    prepared = prepare_crops(image, faces, spec)
    assert [face.track_id for face in prepared] == [1, 2]
    assert prepared[0].crop_box == square_crop_box(faces[0].box, spec.crop_scale)
    assert all(face.crop.shape == (S, S, 3) and face.crop.dtype == np.uint8 for face in prepared)
    # crop_box 40 px at (30, 20): 40 -> 32 px by area averaging; its centre matches the image's
    centre = prepared[0].crop[S // 2 - 2 : S // 2 + 2, S // 2 - 2 : S // 2 + 2].mean()
    assert abs(centre - image[45:55, 45:55].mean()) < 40


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(models):
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        TorchScriptRestorer.load(models["identity"], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_restores_like_cpu(models):
    crops = random_crops(20)
    on_cpu = TorchScriptRestorer.load(models["brighten"], device="cpu").restore(crops)
    on_gpu = TorchScriptRestorer.load(models["brighten"], device="cuda", fp16=True, max_batch=8).restore(crops)
    assert np.abs(on_gpu.astype(int) - on_cpu.astype(int)).max() <= 1


def test_faces_larger_than_max_face_px_keep_their_own_pixels():
    image = np.zeros((200, 200, 3), np.uint8)
    small, large = Face(Box(10, 10, 30, 30), 0.9, track_id=1), Face(Box(80, 80, 90, 90), 0.9, track_id=2)
    prepared = prepare_crops(image, [small, large], make_spec(), max_face_px=48)
    assert prepared[0].crop is not None
    assert prepared[1] == large  # no crop: the restorer skips it and compositing leaves it alone
