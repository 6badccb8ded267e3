"""Pretrained-weights policy: offline fail-fast with a helpful message, local files, text-prototype cache."""
from __future__ import annotations

import socket
import time

import pytest
import torch

from gigacount_lib.binning import BinConfig
from gigacount_lib.models import PretrainedWeightsUnavailable, build_model
from gigacount_lib.models import pretrained as P
from gigacount_lib.models.head import bin_prompts


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache (whatever the machine has)."""
    import huggingface_hub.constants as hf_constants

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_torch_hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GIGACOUNT_OFFLINE", raising=False)


def test_text_weights_unreachable_fail_fast(no_network):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained=True)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "text_weights=" in message and "pretrained=None" in message and "ViT-B-16" in message


def test_image_weights_unreachable_fail_fast(no_network):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match="image_weights="):
        build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained=True, text_pretrained=False)
    with pytest.raises(PretrainedWeightsUnavailable, match="image_weights="):
        build_model("clip_ebc_resnet50", BinConfig.gigacount_qnrf(), pretrained=True, text_pretrained=False)
    assert time.monotonic() - start < 20


def test_offline_mode_needs_no_probe(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))

    def must_not_connect(*args, **kwargs):
        raise AssertionError("offline mode must not open a connection")

    monkeypatch.setattr(socket, "create_connection", must_not_connect)
    assert P.network_available() is False
    with pytest.raises(PretrainedWeightsUnavailable, match="offline mode"):
        P.resolve_timm_weights("convnext_tiny.fb_in1k")


def test_hanging_probe_is_bounded(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GIGACOUNT_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    start = time.monotonic()
    assert P.network_available(timeout=0.5) is False
    assert time.monotonic() - start < 2


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_weights"):
        build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained=None, image_weights=tmp_path / "nope.pth")


def test_local_timm_weights_file_is_loaded(tmp_path, no_network):
    import timm

    torch.manual_seed(7)
    reference = timm.create_model("convnext_tiny.fb_in1k", pretrained=False)
    path = tmp_path / "convnext_tiny.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained=None, image_weights=path)
    info = model.weights_info["image"]
    assert info["random_init"] is False and info["source"] == f"file:{path.resolve()}"
    assert model.weights_info["text"]["random_init"] is True
    loaded = model.encoder.backbone.stages_2.blocks[4].mlp.fc1.weight
    torch.testing.assert_close(loaded, reference.stages[2].blocks[4].mlp.fc1.weight)
    # the paper-text variant starts every ODConv candidate from the loaded depthwise kernel
    od = build_model("gigacount_odconv_blocks", BinConfig.gigacount_qnrf(), pretrained=None, image_weights=path)
    cand = od.encoder.backbone.stages_1.blocks[0].conv_dw.weight
    for i in range(cand.shape[0]):
        torch.testing.assert_close(cand[i], reference.stages[1].blocks[0].conv_dw.weight)


def test_text_prototype_cache_hit(monkeypatch, tmp_path):
    monkeypatch.setenv("GIGACOUNT_CACHE", str(tmp_path / "cache"))
    prompts = bin_prompts(BinConfig.gigacount_qnrf())
    first, info1 = P.compute_text_prototypes("RN50", prompts, pretrained=False)
    assert info1["cache_hit"] is False and info1["random_init"] is True
    assert first.shape == (5, 1024)
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(5))

    # random prototypes are reproducible (seeded tower) and leave the global RNG alone
    state = torch.random.get_rng_state()
    again, _ = P.compute_text_prototypes("RN50", prompts, pretrained=False, use_cache=False)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.testing.assert_close(first, again)
    sim = first @ first.T
    assert (sim - torch.eye(5)).abs().max() > 1e-3  # distinct prompts, distinct prototypes

    # a cache hit must not build the text tower at all
    def no_tower(*args, **kwargs):
        raise AssertionError("the text tower was rebuilt despite a cached result")

    monkeypatch.setattr(P, "build_clip_text_tower", no_tower)
    second, info2 = P.compute_text_prototypes("RN50", prompts, pretrained=False)
    assert info2["cache_hit"] is True and info2["cache_path"] == info1["cache_path"]
    assert info2["text_tower_params"] == info1["text_tower_params"] > 60_000_000
    torch.testing.assert_close(first, second)
    model = build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained=None, clip_model="RN50")
    assert model.weights_info["text"]["cache_hit"] is True
    torch.testing.assert_close(model.head.text_prototypes, first)

    # the key covers the prompt list and the weights
    other = P.text_prototype_cache_path("RN50", None, prompts[:-1] + ["There are many people."])
    assert str(other) != info1["cache_path"]
    assert P.text_prototype_cache_path("RN50", "open_clip:RN50/openai", prompts) != \
        P.text_prototype_cache_path("RN50", None, prompts)


def test_prompts():
    from gigacount_lib.models.head import format_count_prompt, number_to_words

    assert bin_prompts(BinConfig.gigacount_qnrf()) == [
        "There is no person.", "There is one person.", "There are two people.", "There are three people.",
        "There are more than four people."]
    assert bin_prompts(BinConfig.gigacount_qnrf(), "number")[2] == "There are 2 people."
    assert format_count_prompt(3, 5) == "There are between three and five people."
    assert format_count_prompt(3, 5, "number") == "There are between 3 and 5 people."
    assert number_to_words(42) == "forty-two" and number_to_words(105) == "one hundred and five"
    with pytest.raises(ValueError, match="style"):
        format_count_prompt(1, 1, "emoji")


def test_torchvision_convnext_weights_unreachable_fail_fast(no_network):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        P.resolve_torchvision_convnext_weights()
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "download.pytorch.org" in message and "image_weights=" in message and "torchvision" in message
