"""`--quick` training learns, and its export is a model the pipeline can load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamer.config import ConfigError
from streamer.model_contract import SPEC_FILE_NAME, ContractError, RestorerSpec
from tests.helpers.faces import require_faces
from training import train
from training.export import export_model, load_run, verify_export
from training.model import ARCHITECTURES, build_model, load_weights_into


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, train.RunState]:
    require_faces()
    root = tmp_path_factory.mktemp("quick")
    config = train.load_config(None, {**train.QUICK, "out": str(root / "run"), "cache_dir": str(root / "cache")})
    return Path(config.out), train.train(config)


# A real (quick) training run takes a minute: slow, and run by .ci/run explicitly.
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_training_lowers_the_validation_loss(quick_run):
    run_dir, state = quick_run
    first, last = state.val_history[0], state.val_history[-1]
    assert last["loss"] < first["loss"]
    assert last["psnr"] > first["psnr"]
    for name in ("config.yaml", "last.pt", "best.pt", "loss_curve.png"):
        assert (run_dir / name).is_file(), name


@pytest.mark.slow
def test_quick_training_resumes_from_its_checkpoint(quick_run):
    run_dir, state = quick_run
    config, _, _ = load_run(run_dir)
    resumed = train.Trainer(config).run()  # the budget is spent: it resumes, validates, and stops
    assert resumed.step == state.step
    assert resumed.val_history[: len(state.val_history)] == state.val_history


def test_export_round_trips_the_contract_and_metadata(tmp_path):
    # Export does not care whether the weights were trained: a fresh model is exported the same way.
    config = train.TrainConfig(arch="tiny")
    model = build_model(config.arch).eval()
    spec = RestorerSpec(config.input_size, config.crop_scale, training={"licence": "test", "steps": 3})
    path = tmp_path / "restorer.ts"
    export_model(model, spec, path)

    assert verify_export(path, reference=model) == spec
    extra = {SPEC_FILE_NAME: ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[SPEC_FILE_NAME])["training"] == {"licence": "test", "steps": 3}
    x = torch.rand(5, 3, 64, 64) * 1.2 - 0.1  # a little outside [0, 1]: output must still be inside
    with torch.no_grad():
        y = loaded(x)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_verify_rejects_a_model_that_breaks_the_contract(tmp_path):
    class Shrinks(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, ::2, ::2]

    path = tmp_path / "bad.ts"
    torch.jit.save(
        torch.jit.script(Shrinks()), str(path), _extra_files={SPEC_FILE_NAME: RestorerSpec(64, 1.5).to_json()}
    )
    with pytest.raises(ContractError, match="output"):
        verify_export(path)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_keeps_the_shape_and_range(arch):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        y = build_model(arch).eval()(x)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_a_multi_frame_model_grown_from_a_single_frame_one_starts_as_it():
    single = build_model("tiny").eval()
    with torch.no_grad():
        for p in single.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    multi = build_model("tiny", frames=3).eval()
    load_weights_into(multi, single.state_dict())
    windows = torch.rand(2, 3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(multi(windows), single(windows[:, -1]), atol=1e-5)
        assert multi(windows).shape == (2, 3, 64, 64)


@pytest.fixture(scope="module")
def quick_multi_frame_run(tmp_path_factory) -> tuple[Path, train.RunState]:
    root = tmp_path_factory.mktemp("quick_k3")
    config = train.load_config(
        None,
        {
            **train.QUICK,
            "pairs": "tracks",
            "frames": 3,
            "track_frames": 3,
            "young_share": 0.2,
            "train_limit": 96,
            "val_limit": 24,
            "out": str(root / "run"),
            "cache_dir": str(root / "cache"),
        },
    )
    return Path(config.out), train.train(config)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_multi_frame_training_lowers_the_validation_loss_and_exports_a_k_frame_model(
    quick_multi_frame_run, tmp_path
):
    run_dir, state = quick_multi_frame_run
    first, last = state.val_history[0], state.val_history[-1]
    assert last["loss"] < first["loss"]
    config, model, _ = load_run(run_dir)
    spec = RestorerSpec(config.input_size, config.crop_scale, frames=config.frames)
    path = tmp_path / "k3.ts"
    export_model(model, spec, path)
    assert verify_export(path, reference=model).frames == 3


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("lr: 0.001\nlearning_rate: 0.01\n", {}, "settings.yaml:2: learning_rate: unknown key"),
        ("batch_size: many\n", {}, "settings.yaml:1: batch_size: Input should be a valid integer"),
        ("pairs: videos\n", {}, "settings.yaml:1: pairs: Input should be 'stills' or 'tracks'"),
        ("", {"minutes": -1.0}, "--minutes: minutes: Input should be greater than 0"),
    ],
)
def test_training_settings_are_validated_like_the_pipeline_config(tmp_path, text, overrides, expected):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        train.load_config(path, overrides)
    assert expected in str(error.value)
