"""GigaCount variants and CLIP-EBC baselines: shapes, outputs, gradients, round-trips, quiet forward.

All models are built with random init (``pretrained=None``): no weights can be downloaded here.
The CLIP image towers (RN50, ViT-B/16) are large on CPU, so they are run at small sizes only.
"""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from gigacount_lib.binning import BinConfig
from gigacount_lib.models import CountingOutput, build_model, list_models
from gigacount_lib.models.odconv import ODConv2d

GIGACOUNT_VARIANTS = ["gigacount", "gigacount_stage4", "gigacount_odconv_blocks", "gigacount_no_fusion"]
BASELINES = ["clip_ebc_resnet50", "clip_ebc_vit_b16"]
ALL = GIGACOUNT_VARIANTS + BASELINES


@pytest.fixture(scope="module")
def bin_config() -> BinConfig:
    return BinConfig.gigacount_qnrf()


@pytest.fixture(scope="module")
def models(bin_config):
    torch.manual_seed(0)
    return {name: build_model(name, bin_config, pretrained=None).eval() for name in ALL}


def test_registry_names():
    assert set(ALL) <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", BinConfig.gigacount_qnrf(), pretrained=None)


@pytest.mark.parametrize("name", GIGACOUNT_VARIANTS)
@pytest.mark.parametrize("size", [(224, 224), (256, 320), (512, 512), (200, 250)])
def test_gigacount_shapes_and_finite(models, bin_config, name, size):
    model = models[name]
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert isinstance(out, CountingOutput)
    h, w = math.ceil(size[0] / 8), math.ceil(size[1] / 8)
    assert out.logits.shape == (1, bin_config.num_bins, h, w)
    assert out.density.shape == (1, 1, h, w)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.density).all()


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_shapes_small_sizes(models, bin_config, name):
    model = models[name]
    with torch.no_grad():
        for size in [(64, 96), (72, 90)]:  # 72x90 is not a multiple of 16 or 32: padded then cropped
            out = model(torch.rand(1, 3, *size))
            h, w = math.ceil(size[0] / 8), math.ceil(size[1] / 8)
            assert out.logits.shape == (1, bin_config.num_bins, h, w)
            assert out.density.shape == (1, 1, h, w)
            assert torch.isfinite(out.logits).all() and torch.isfinite(out.density).all()


def test_output_size_matches_block_count_maps(models):
    from gigacount_lib.data.density import block_count_maps

    size = (200, 250)
    target = block_count_maps([torch.tensor([[10.0, 20.0], [249.0, 199.0]])], size, 8)
    with torch.no_grad():
        out = models["gigacount"](torch.rand(1, 3, *size))
    assert out.density.shape == target.shape


@pytest.mark.parametrize("name", ALL)
def test_density_is_probabilities_times_anchors(models, bin_config, name):
    size = (64, 64) if name in BASELINES else (96, 128)
    with torch.no_grad():
        out = models[name](torch.rand(2, 3, *size))
    probs = out.logits.softmax(dim=1)
    anchors = torch.tensor(bin_config.anchor_points).view(1, -1, 1, 1)
    torch.testing.assert_close(out.density, (probs * anchors).sum(1, keepdim=True))
    torch.testing.assert_close(out.density, bin_config.expected_count(probs))
    assert (out.density >= 0).all() and (out.density <= max(bin_config.anchor_points) + 1e-5).all()


def _backward(model, size, batch=2):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(torch.rand(batch, 3, *size))
    (out.density.sum() + out.logits.square().mean()).backward()
    model.eval()


@pytest.mark.parametrize("name", GIGACOUNT_VARIANTS + ["clip_ebc_resnet50"])
def test_gradients_reach_image_branch_not_text(models, name):
    model = models[name]
    _backward(model, (64, 64))
    image_branch = model.encoder if hasattr(model, "encoder") else model.features
    grads = [p.grad for p in image_branch.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert model.head.logit_scale.grad is not None
    # the text side is a fixed buffer computed once by the frozen tower: it can never receive gradients
    assert not model.head.text_prototypes.requires_grad and model.head.text_prototypes.grad is None
    assert "text_prototypes" not in dict(model.named_parameters())
    assert not any("text" in n for n, _ in model.named_parameters())
    model.zero_grad(set_to_none=True)


def test_vit_baseline_is_frozen_and_prompt_tuned(models):
    model = models["clip_ebc_vit_b16"]
    _backward(model, (32, 48))
    visual = list(model.features.visual.parameters())
    assert visual and all(not p.requires_grad and p.grad is None for p in visual)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.features.vpt)
    assert model.weights_info["image"]["frozen"] is True
    model.zero_grad(set_to_none=True)


def _vit_features_batch_first(features, x):
    """CLIPViTFeatures.forward as open_clip lays it out (batch-first tokens), for comparison."""
    v = features.visual
    tokens = v.conv1(x)
    batch, _, gh, gw = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([v.class_embedding.expand(batch, 1, -1), tokens], dim=1) + features.position_embedding(gh, gw)
    tokens = v.ln_pre(tokens)
    n = features.num_vpt
    for i, block in enumerate(v.transformer.resblocks):
        tokens = torch.cat([tokens[:, :1], features.vpt[i].unsqueeze(0).expand(batch, -1, -1), tokens[:, 1:]], dim=1)
        tokens = block(tokens)
        tokens = torch.cat([tokens[:, :1], tokens[:, 1 + n:]], dim=1)
    return v.ln_post(tokens)[:, 1:].transpose(1, 2).reshape(batch, features.width, gh, gw)


def test_vit_features_sequence_first_equal_batch_first(models):
    """The blocks run on (L, B, D) tokens (a CPU bf16 speed fix); the maths must be open_clip's batch-first."""
    features = models["clip_ebc_vit_b16"].features
    assert features.deep_vpt and features.num_vpt > 0
    x = torch.rand(2, 3, 48, 32, generator=torch.Generator().manual_seed(0))
    blocks = list(features.visual.transformer.resblocks)
    with torch.no_grad():
        ours = features(x)
        try:
            for block in blocks:
                block.attn.batch_first = True
            reference = _vit_features_batch_first(features, x)
        finally:
            for block in blocks:
                block.attn.batch_first = False
    assert ours.shape == (2, features.width, 3, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", GIGACOUNT_VARIANTS + ["clip_ebc_resnet50"])
def test_state_dict_round_trip(models, bin_config, name):
    source = models[name]
    torch.manual_seed(123)  # a different random init
    target = build_model(name, bin_config, pretrained=None).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = target(x).density
        target.load_state_dict(source.state_dict())
        a, b = source(x), target(x)
    assert not torch.allclose(before, a.density)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.density, b.density)


def test_forward_is_quiet(models, capsys):
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Catch(level=logging.DEBUG)
    gc_logger = logging.getLogger("gigacount")
    gc_logger.addHandler(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with torch.no_grad():
            for name in GIGACOUNT_VARIANTS:
                models[name](torch.rand(1, 3, 64, 64))
            models["clip_ebc_resnet50"](torch.rand(1, 3, 32, 32))
    finally:
        gc_logger.removeHandler(handler)
        root.removeHandler(handler)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert records == []


def test_weights_info_records_random_init(models):
    for name in ALL:
        info = models[name].weights_info
        assert info["model"] == name and info["pretrained_arg"] == "None"
        assert info["image"]["random_init"] is True and info["image"]["source"] == "random"
        assert info["text"]["random_init"] is True and info["text"]["weights"].startswith("random")
        assert models[name].bin_config == BinConfig.gigacount_qnrf()
        assert json.loads(json.dumps(info)) == info  # JSON-ready, for checkpoints and run manifests


def test_gigacount_architecture_facts(models):
    model = models["gigacount"]
    enc = model.encoder
    assert enc.channels == [96, 192, 384] and enc.reductions == [4, 8, 16]
    n_enc = sum(p.numel() for p in enc.parameters())
    assert 12.2e6 < n_enc < 12.5e6  # "about 12.3M parameters" for the stem + stages 1-3
    widths = [(b.in_channels, b.hidden_channels, b.out_channels) for b in model.attention]
    assert widths == [(96, 48, 16), (192, 96, 32), (384, 192, 64)]
    assert sum(isinstance(m, ODConv2d) for m in model.attention.modules()) == 12
    assert model.fusion.out_channels == 112
    assert model.projection.out_channels == 512  # ViT-B/16 text width (the official code's tower)
    assert not any(isinstance(m, ODConv2d) for m in enc.modules())
    # paper-text variant: every ConvNeXt block (3 + 3 + 9) has an ODConv depthwise conv
    assert models["gigacount_odconv_blocks"].encoder.num_odconv_blocks == 15
    assert models["gigacount_stage4"].encoder.channels == [96, 192, 384, 768]
    assert models["gigacount_stage4"].fusion.out_channels == 240
    assert models["gigacount_no_fusion"].fusion.out_channels == 64


def test_intermediate_shapes_and_fusion_matches_official_resize(models):
    model = models["gigacount"]
    with torch.no_grad():
        inter = model.forward_intermediates(model.prepare(torch.rand(1, 3, 224, 224)))
    assert [tuple(f.shape[1:]) for f in inter["encoder"]] == [(96, 56, 56), (192, 28, 28), (384, 14, 14)]
    assert [tuple(f.shape[1:]) for f in inter["attended"]] == [(16, 56, 56), (32, 28, 28), (64, 14, 14)]
    assert [tuple(a.shape[1:]) for a in inter["spatial_attention"]] == [(1, 56, 56), (1, 28, 28), (1, 14, 14)]
    assert tuple(inter["fused_stride4"].shape[1:]) == (112, 56, 56)
    assert tuple(inter["fused"].shape[1:]) == (112, 28, 28)
    # the official code resizes (bilinear) to 28x28; for 224 inputs that equals our 2x2 average pool
    official = F.interpolate(inter["fused_stride4"], size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(inter["fused"], official, rtol=1e-5, atol=1e-5)
    assert tuple(inter["features"].shape[1:]) == (512, 28, 28)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 224, 224))
    assert out.logits.shape[-2:] == (28, 28)


def test_bad_inputs_are_clear_errors(models):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        models["gigacount"](torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="reduction"):
        build_model("gigacount", BinConfig.fine(4, reduction=16), pretrained=None)
    with pytest.raises(ValueError, match="pretrained must be"):
        build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained="openai")


def test_other_bin_configs_and_text_width(bin_config):
    fine = BinConfig.fine(8)
    model = build_model("gigacount_no_fusion", fine, pretrained=None, clip_model="RN50").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.logits.shape[1] == 9 and model.head.embed_dim == 1024


def test_head_runs_in_float32_under_bf16_autocast(bin_config):
    """bf16 features (as the projection conv gives under autocast) -> float32 logits and density,
    equal to the float32 head on the same (up-cast) features; rounding them in bf16 biased the counts."""
    from gigacount_lib.models.head import CosineBinHead

    torch.manual_seed(0)
    head = CosineBinHead(torch.randn(bin_config.num_bins, 64), bin_config.anchor_points)
    features = (torch.randn(2, 64, 20, 20) * 3).to(torch.bfloat16)
    with torch.no_grad():
        reference = head(features.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(features)
    assert out.logits.dtype == torch.float32 and out.density.dtype == torch.float32
    torch.testing.assert_close(out.logits, reference.logits)
    torch.testing.assert_close(out.density, reference.density)


def test_resnet_baseline_refuses_options_it_would_ignore():
    with pytest.raises(TypeError, match="num_vpt"):
        build_model("clip_ebc_resnet50", BinConfig.gigacount_qnrf(), pretrained=None, num_vpt=8)


def test_resnet_baseline_decoder_is_clip_ebc_bottleneck(models):
    """CLIP-EBC's RN50 decoder is its Bottleneck with expansion 1: inner width 2048, not 2048 // 4."""
    body = models["clip_ebc_resnet50"].decoder.body
    assert [m.out_channels for m in body if isinstance(m, torch.nn.Conv2d)] == [2048, 2048, 2048]


def test_trainable_parameters_match_the_official_image_branch(models):
    """The official image branch (ViT-B/16 text, attention block as in its code) has 20,722,260."""
    assert sum(p.numel() for p in models["gigacount"].parameters() if p.requires_grad) == 20_722_260


def test_attention_block_structure_is_the_official_one(models):
    """Each of conv1-4 is ODConv 1x1 -> ReLU -> BN; the channel attention is sigma(ReLU(W avg)) with
    no bias, range [0.5, 1); the 7x7 spatial conv has no bias."""
    from gigacount_lib.models.attention import ODConvUnit

    for block in models["gigacount"].attention:
        units = [block.conv1, block.conv2, block.conv3, block.conv4]
        assert all(isinstance(u, ODConvUnit) for u in units)
        for unit in units:
            od, act, bn = unit
            assert isinstance(od, ODConv2d) and od.kernel_size == 1
            assert isinstance(act, torch.nn.ReLU) and isinstance(bn, torch.nn.BatchNorm2d)
            assert bn.num_features == od.out_channels
        assert block.channel_attention.fc.bias is None and block.spatial_attention.conv.bias is None
        assert block.spatial_attention.conv.kernel_size == (7, 7)
    block = models["gigacount"].attention[0]
    x = torch.randn(3, 96, 8, 8)
    with torch.no_grad():
        ca = block.channel_attention.attention(x)
    assert ca.shape == (3, 96, 1, 1) and float(ca.min()) >= 0.5 and float(ca.max()) < 1.0
    assert (ca == 0.5).any()  # channels whose pre-activation is negative sit exactly at 1/2
    with torch.no_grad():
        y, maps = block.forward_with_maps(x)
        torch.testing.assert_close(block(x), y)  # the inspection path computes the same thing
    assert y.shape == (3, 16, 8, 8) and maps["spatial"].shape == (3, 1, 8, 8)
    assert [a.kernel.shape for a in maps["odconv"]] == [(3, 4)] * 4
    assert float(maps["spatial"].min()) > 0 and float(maps["spatial"].max()) < 1


def test_attention_block_keeps_unit_scale_at_init():
    """With BatchNorm after every unit the block's output std is about 0.5 at init (official: 0.51);
    without it (conv2-4 a linear chain) it was about 0.11."""
    from gigacount_lib.models.attention import ScaleAttentionBlock

    torch.manual_seed(0)
    block = ScaleAttentionBlock(96, 48, 16).train()
    std = float(block(torch.randn(8, 96, 32, 32)).std())
    assert 0.35 < std < 0.7


def test_stochastic_depth_follows_torchvision_schedule():
    from gigacount_lib.models.encoder import TruncatedConvNeXt

    enc = TruncatedConvNeXt(drop_path_rate=0.1)
    rates = [float(getattr(b.drop_path, "drop_prob", 0.0)) for s in range(3)
             for b in getattr(enc.backbone, f"stages_{s}").blocks]
    expected = [0.1 * i / 17 for i in range(15)]  # torchvision: 0.1 * block_id / (18 - 1)
    assert rates == pytest.approx(expected, abs=1e-6)
    assert rates[-1] == pytest.approx(0.0824, abs=1e-4)
    plain = TruncatedConvNeXt(drop_path_rate=0.0)
    assert not any(type(m).__name__ == "DropPath" for m in plain.modules())
    with pytest.raises(ValueError, match="drop_path_rate"):
        TruncatedConvNeXt(drop_path_rate=1.5)


def test_head_temperature_init_is_an_option():
    default = build_model("gigacount_atto", pretrained=None)
    assert float(default.head.logit_scale.exp()) == pytest.approx(1 / 0.07, rel=1e-5)
    model = build_model("gigacount_atto", pretrained=None, logit_scale_init=math.log(100))
    assert float(model.head.logit_scale.exp()) == pytest.approx(100, rel=1e-5)
    assert model.weights_info["head"]["logit_scale_init"] == pytest.approx(math.log(100))


def test_attention_output_widths_are_an_option():
    default = build_model("gigacount_atto", pretrained=None)
    assert default.fusion.out_channels == 6 + 13 + 26  # C / 6 of ConvNeXt-Atto's 40 / 80 / 160
    wide = build_model("gigacount_atto", pretrained=None, attention_out=[16, 32, 64])
    assert wide.fusion.out_channels == 112 and wide.weights_info["attention_out"] == [16, 32, 64]
    out = wide.eval()(torch.rand(1, 3, 64, 64))
    assert out.density.shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="one width per fused scale"):
        build_model("gigacount_atto", pretrained=None, attention_out=[16, 32])


def test_layer_scale_init_is_an_option_of_random_init_only(tmp_path):
    from gigacount_lib.models.encoder import TruncatedConvNeXt

    def gammas(enc):
        return torch.cat([p.detach().flatten() for n, p in enc.named_parameters() if n.endswith("gamma")])

    default = gammas(TruncatedConvNeXt(timm_name="convnext_atto"))
    assert default.numel() == 2 * 40 + 2 * 80 + 6 * 160  # stages 1-3 of ConvNeXt-Atto
    assert torch.allclose(default, torch.full_like(default, 1e-6))
    enc = TruncatedConvNeXt(timm_name="convnext_atto", ls_init_value=0.5)
    assert enc.ls_init_value == 0.5 and bool(torch.all(gammas(enc) == 0.5))
    with pytest.raises(ValueError, match="ls_init_value must be > 0"):
        TruncatedConvNeXt(timm_name="convnext_atto", ls_init_value=0.0)
    with pytest.raises(ValueError, match="random init only"):
        TruncatedConvNeXt(timm_name="convnext_atto", checkpoint="timm", ls_init_value=1.0,
                          weights_file=tmp_path / "unused.pth")


@pytest.mark.parametrize("keep_stage4", [False, True])
def test_torchvision_weights_map_onto_the_timm_encoder(tmp_path, keep_stage4):
    """A (random) torchvision ConvNeXt-Tiny state dict loaded into our encoder gives torchvision's
    features[0:2], [0:4], [0:6] (and [0:8]) to 1e-5."""
    import torchvision

    from gigacount_lib.models.encoder import TruncatedConvNeXt

    torch.manual_seed(3)
    reference = torchvision.models.convnext_tiny().eval()
    path = tmp_path / "convnext_tiny-torchvision.pth"
    torch.save(reference.state_dict(), path)
    enc = TruncatedConvNeXt(keep_stage4=keep_stage4, weights_file=path).eval()
    assert enc.checkpoint == "torchvision" and enc.weights_source == f"file:{path.resolve()}"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = enc(x)
        ends = (2, 4, 6, 8) if keep_stage4 else (2, 4, 6)
        theirs = [reference.features[:end](x) for end in ends]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_torchvision_checkpoint_of_another_model_is_refused(tmp_path):
    from gigacount_lib.models.encoder import TruncatedConvNeXt

    path = tmp_path / "not_convnext.pth"
    torch.save({"features.0.0.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not_convnext.pth"):
        TruncatedConvNeXt(weights_file=path)
    with pytest.raises(ValueError, match="checkpoint='timm'"):
        TruncatedConvNeXt(pretrained=True, timm_name="convnext_atto")


def test_orthogonal_prototypes_option(bin_config):
    """A random text tower's prototypes are nearly collinear; the option swaps in orthonormal ones, recorded."""
    from gigacount_lib.models.registry import orthogonal_prototypes

    model = build_model("gigacount_atto", bin_config, pretrained=None, prototypes="orthogonal")
    protos = model.head.text_prototypes.float()
    k = bin_config.num_bins
    torch.testing.assert_close(protos @ protos.T, torch.eye(k), atol=1e-5, rtol=0)
    torch.testing.assert_close(protos, orthogonal_prototypes(k, protos.shape[1]))
    assert "orthogonal" in model.weights_info["text"]["prototypes"]
    default = build_model("gigacount_atto", bin_config, pretrained=None)
    assert "prototypes" not in default.weights_info["text"]
    with pytest.raises(ValueError, match="prototypes"):
        build_model("gigacount_atto", bin_config, pretrained=None, prototypes="learned")


def test_gigacount_vgg_is_gigacount_on_the_vgg_encoder_and_refuses_pretrained_weights(bin_config):
    from gigacount_lib.models import GigaCount
    from gigacount_lib.models.vgg import VGGPyramid

    torch.manual_seed(0)
    model = build_model("gigacount_vgg", bin_config, pretrained=None, logit_scale_init=math.log(100)).eval()
    assert isinstance(model, GigaCount) and isinstance(model.encoder, VGGPyramid)
    assert model.encoder.channels == [64, 64, 128] and model.encoder.reductions == [4, 8, 16]
    assert model.fusion.out_channels == 64 // 6 + 64 // 6 + 128 // 6  # the C / 6 attention outputs
    assert model.weights_info["image"]["random_init"] and model.weights_info["text"]["random_init"]
    for size in [(128, 128), (200, 250)]:  # 200x250: padded to multiples of 32, then cropped
        with torch.no_grad():
            out = model(torch.rand(1, 3, *size))
        assert out.density.shape == (1, 1, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
        assert torch.isfinite(out.density).all()
    maps = model.encoder(torch.rand(1, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 24), (64, 8, 12), (128, 4, 6)]
    _backward(model, (64, 64))
    assert all(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("gigacount_vgg", bin_config, pretrained=True)
    with pytest.raises(ValueError, match="width must be >= 1"):
        VGGPyramid(0)


def test_vgg_pyramid_dilated_convs_add_context_at_stride_8_without_changing_shapes():
    from gigacount_lib.models.vgg import VGGPyramid

    def dilated_convs(encoder):
        return sum(isinstance(m, torch.nn.Conv2d) and m.dilation == (2, 2) for m in encoder.stride8)

    plain, deep = VGGPyramid(8), VGGPyramid(8, dilated=3)
    assert (dilated_convs(plain), dilated_convs(deep), dilated_convs(VGGPyramid(8, dilated=0))) == (1, 3, 0)
    x = torch.rand(2, 3, 64, 96)
    assert [m.shape for m in plain(x)] == [m.shape for m in deep(x)]
    model = build_model("gigacount_vgg", BinConfig.gigacount_qnrf(), pretrained=None, dilated=3)
    assert model.weights_info["image"]["encoder"] == "vgg_pyramid(width=16, dilated=3)"
    with pytest.raises(ValueError, match="dilated must be >= 0"):
        VGGPyramid(8, dilated=-1)
