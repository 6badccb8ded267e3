"""ODConv2d: equality with a plain convolution under uniform attentions, and with a per-sample reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gigacount_lib.models.odconv import ODAttention, ODConv2d

CASES = [  # (in, out, kernel, stride, groups)
    (8, 12, 1, 1, 1),
    (8, 12, 1, 2, 1),
    (8, 12, 1, 1, 4),
    (6, 10, 3, 1, 1),
    (6, 10, 3, 2, 2),
    (16, 16, 7, 1, 16),  # depthwise, as in the ODConv ConvNeXt blocks
]


def reference_odconv(conv: ODConv2d, x: torch.Tensor, att: ODAttention) -> torch.Tensor:
    """Straightforward ODConv: one sample at a time, attentions applied to input, kernel and output."""
    outs = []
    for b in range(x.shape[0]):
        kernel = sum(att.kernel[b, n] * conv.weight[n] for n in range(conv.kernel_num))
        kernel = kernel * att.spatial[b]  # (k, k) broadcast over (out, in/g, k, k)
        xb = x[b:b + 1] * att.channel[b].view(1, -1, 1, 1)
        yb = F.conv2d(xb, kernel, stride=conv.stride, padding=conv.padding, groups=conv.groups)
        yb = yb * att.filter[b].view(1, -1, 1, 1)
        if conv.bias is not None:
            yb = yb + conv.bias.view(1, -1, 1, 1)
        outs.append(yb)
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,k,stride,groups", CASES)
def test_uniform_attention_equals_plain_conv(cin, cout, k, stride, groups):
    torch.manual_seed(0)
    conv = ODConv2d(cin, cout, k, stride=stride, groups=groups, kernel_num=4)
    x = torch.randn(3, cin, 11, 13)
    att = ODAttention.uniform(3, cin, cout, k, 4)
    y = conv.forward_with_attention(x, att)
    expected = F.conv2d(x, conv.weight.mean(dim=0), stride=stride, padding=k // 2, groups=groups)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin,cout,k,stride,groups", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_per_sample_reference(cin, cout, k, stride, groups, bias):
    torch.manual_seed(1)
    conv = ODConv2d(cin, cout, k, stride=stride, groups=groups, kernel_num=4, bias=bias).train()
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(4, cin, 9, 10)
    att = conv.compute_attention(x)
    torch.testing.assert_close(conv(x), reference_odconv(conv, x, att), rtol=1e-4, atol=1e-5)


def test_attention_shapes_and_ranges():
    conv = ODConv2d(32, 24, 3, kernel_num=4).eval()
    att = conv.compute_attention(torch.randn(5, 32, 8, 8))
    assert att.channel.shape == (5, 32) and att.filter.shape == (5, 24)
    assert att.spatial.shape == (5, 3, 3) and att.kernel.shape == (5, 4)
    torch.testing.assert_close(att.kernel.sum(1), torch.ones(5))
    for a in (att.channel, att.filter, att.spatial):
        assert ((a > 0) & (a < 1)).all()
    assert conv.hidden_channels == 16  # max(32 * 0.0625, 16)
    assert ODConv2d(512, 8, 1).hidden_channels == 32


def test_attentions_depend_on_the_sample():
    """Different inputs get different kernels (the convolution is dynamic)."""
    torch.manual_seed(0)
    conv = ODConv2d(8, 8, 1).eval()
    att = conv.compute_attention(torch.randn(2, 8, 6, 6) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1))
    assert not torch.allclose(att.kernel[0], att.kernel[1])


def test_gradients_reach_all_parameters():
    conv = ODConv2d(8, 8, 3, bias=True)
    conv(torch.randn(2, 8, 6, 6)).square().mean().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="expected input"):
        ODConv2d(8, 8, 1)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="divisible by groups"):
        ODConv2d(6, 8, 1, groups=4)
    with pytest.raises(ValueError, match="batch of at least 2"):
        ODConv2d(8, 8, 1).train()(torch.randn(1, 8, 5, 5))
    assert ODConv2d(8, 8, 1).eval()(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


def test_depthwise_has_no_filter_attention_like_the_official_odconv():
    conv = ODConv2d(16, 16, 7, groups=16).eval()
    assert conv.filter_fc is None
    att = conv.compute_attention(torch.randn(2, 16, 9, 9))
    assert torch.equal(att.filter, torch.ones(2, 16))
    assert ODConv2d(16, 16, 3, groups=4).filter_fc is not None  # grouped, not depthwise: kept
