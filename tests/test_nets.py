"""Networks: exact parameter counts against the reference, shapes, padding to the stride, init, freezing, unwrapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_translate.nets import (
    NORM_LAYERS,
    NLayerDiscriminator,
    PatchDiscriminator,
    PatchLayer,
    PixelDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    bare,
    build_discriminator,
    build_generator,
    init_weights,
    norm_layer,
    run_padded,
    set_requires_grad,
)
from gan_translate.nets.layers import pad_to_multiple


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- parameter counts of the reference networks (ngf = ndf = 64) -----------------------------------------------------


@pytest.mark.parametrize(
    "name, norm, dropout, expected",
    [
        ("resnet_9blocks", "instance", False, 11_378_179),
        ("resnet_6blocks", "instance", False, 7_837_699),
        ("unet_256", "batch", True, 54_413_955),
        ("unet_128", "batch", True, 41_828_995),
    ],
)
def test_generator_parameter_counts_match_reference(name, norm, dropout, expected):
    assert n_params(build_generator(name, 3, 3, ngf=64, norm=norm, use_dropout=dropout)) == expected


@pytest.mark.parametrize(
    "name, input_nc, norm, expected",
    [("basic", 3, "instance", 2_764_737), ("basic", 6, "batch", 2_768_705), ("pixel", 6, "batch", 9_024)],
)
def test_discriminator_parameter_counts_match_reference(name, input_nc, norm, expected):
    assert n_params(build_discriminator(name, input_nc, ndf=64, norm=norm)) == expected


def test_batchnorm_drops_conv_biases_and_instance_norm_keeps_them():
    batch = build_generator("resnet_1blocks", 3, 3, ngf=8, norm="batch")
    instance = build_generator("resnet_1blocks", 3, 3, ngf=8, norm="instance")
    convs_b = [m for m in batch.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    convs_i = [m for m in instance.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    # only the last conv (no norm after it) keeps its bias under BatchNorm
    assert [c.bias is not None for c in convs_b] == [False] * (len(convs_b) - 1) + [True]
    assert all(c.bias is not None for c in convs_i)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in instance.modules())


# --- layers ----------------------------------------------------------------------------------------------------------


def test_norm_layer_lookup():
    inorm = norm_layer("instance")(8)
    assert isinstance(inorm, nn.InstanceNorm2d) and not inorm.affine and not inorm.track_running_stats
    bnorm = norm_layer("batch")(8)
    assert isinstance(bnorm, nn.BatchNorm2d) and bnorm.affine and bnorm.track_running_stats
    assert isinstance(norm_layer("none")(8), nn.Identity)
    assert set(NORM_LAYERS) == {"instance", "batch", "none"}
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        norm_layer("group")


def test_init_weights_normal_is_seeded_and_sets_biases_and_batchnorm():
    torch.manual_seed(0)
    a = init_weights(build_discriminator("basic", 3, ndf=8, norm="batch"))
    torch.manual_seed(0)
    b = init_weights(build_discriminator("basic", 3, ndf=8, norm="batch"))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    first = a.model[0]
    assert torch.count_nonzero(first.bias) == 0
    assert 0.015 < first.weight.std().item() < 0.025  # N(0, 0.02) over 3*8*16 = 384 weights
    bn = next(m for m in a.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.count_nonzero(bn.bias) == 0
    assert abs(bn.weight.mean().item() - 1.0) < 0.05 and bn.weight.std().item() > 0


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types_change_weights(init_type):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    init_weights(net, init_type, gain=0.02)
    assert torch.count_nonzero(net[0].bias) == 0 and torch.count_nonzero(net[1].bias) == 0
    assert not torch.any(net[0].weight == 7.0) and not torch.any(net[1].weight == 7.0)


def test_init_weights_rejects_unknown_type():
    with pytest.raises(ValueError, match="unknown init_type 'uniform'"):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")


def test_set_requires_grad_on_one_module_and_a_list():
    a, b = nn.Linear(2, 2), nn.Conv2d(1, 1, 1)
    set_requires_grad([a, b, None], False)
    assert not any(p.requires_grad for p in [*a.parameters(), *b.parameters()])
    set_requires_grad(b, True)
    assert all(p.requires_grad for p in b.parameters())
    assert not any(p.requires_grad for p in a.parameters())


def test_bare_unwraps_data_parallel_only():
    net = nn.Linear(2, 2)
    assert bare(net) is net
    assert bare(nn.DataParallel(net)) is net
    assert bare(nn.DataParallel(nn.DataParallel(net))) is net
    seq = nn.Sequential(net)
    assert bare(seq) is seq  # an ordinary container is not a wrapper


@pytest.mark.parametrize(
    "size, multiple, expected", [((37, 45), 4, (40, 48)), ((32, 32), 32, (32, 32)), ((5, 3), 32, (32, 32))]
)
def test_pad_to_multiple_sizes(size, multiple, expected):
    x = torch.rand(1, 2, *size)
    padded, pad = pad_to_multiple(x, multiple)
    assert tuple(padded.shape[-2:]) == expected
    left, right, top, bottom = pad
    assert left + right == expected[1] - size[1] and top + bottom == expected[0] - size[0]
    # the original image sits untouched inside the canvas
    assert torch.equal(padded[..., top : top + size[0], left : left + size[1]], x)


def test_pad_uses_reflection_when_possible_and_replicate_beyond():
    x = torch.arange(6.0).reshape(1, 1, 1, 6).expand(1, 1, 6, 6).contiguous()  # columns 0..5
    padded, (left, _, _, _) = pad_to_multiple(x, 8)  # pad 1 left, 1 right: reflection
    assert left == 1 and padded[0, 0, 0, 0].item() == 1.0 and padded[0, 0, 0, -1].item() == 4.0
    padded, (left, _, _, _) = pad_to_multiple(x, 32)  # 13 left > 6: replicate
    assert left == 13 and padded[0, 0, 0, 0].item() == 0.0 and padded[0, 0, 0, -1].item() == 5.0


def test_run_padded_crops_back_and_passes_fitting_input_through():
    calls = []

    def record(t):
        calls.append(tuple(t.shape[-2:]))
        return t * 2

    x = torch.rand(1, 3, 37, 45)
    out = run_padded(record, x, 16)
    assert calls == [(48, 48)] and out.shape == x.shape and torch.allclose(out, x * 2)
    fitting = torch.rand(1, 3, 16, 32)
    assert torch.allclose(run_padded(record, fitting, 16), fitting * 2) and calls[-1] == (16, 32)


# --- generators ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet_1blocks", "resnet_6blocks", "unet_32", "unet_64"])
@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_generator_forward_shape_and_range(name, upsample):
    torch.manual_seed(0)
    net = build_generator(name, 3, 2, ngf=4, norm="instance", upsample=upsample)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = net(x)
    assert y.shape == (2, 2, 64, 64)
    assert y.min() >= -1 and y.max() <= 1
    y.mean().backward()  # gradients reach the first layer
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name, stride", [("resnet_2blocks", 4), ("unet_32", 32)])
def test_generator_pads_odd_sizes(name, stride):
    net = build_generator(name, 1, 3, ngf=4, norm="batch").eval()
    assert net.stride == stride
    for size in [(37, 45), (5, 7)]:
        y = net(torch.rand(1, 1, *size) * 2 - 1)
        assert y.shape == (1, 3, *size) and y.abs().max() <= 1


def test_unet_skip_structure_and_dropout_placement():
    net = UnetGenerator(3, 3, num_downs=7, ngf=4, norm="batch", use_dropout=True)
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 7 - 5 and all(d.p == 0.5 for d in dropouts)
    downs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(downs) == len(ups) == 7
    assert [c.out_channels for c in downs] == [4, 8, 16, 32, 32, 32, 32]
    # every decoder level but the innermost takes the skip concatenation: twice the encoder's channels
    assert sorted(c.in_channels for c in ups) == sorted([4 * 2, 8 * 2, 16 * 2, 32 * 2, 32 * 2, 32 * 2, 32])
    assert isinstance(list(net.modules())[-1], nn.Tanh)


def test_resnet_generator_layout():
    net = ResnetGenerator(3, 3, ngf=8, norm="instance", n_blocks=3, use_dropout=True)
    convs = [m for m in net.model if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        ((7, 7), (1, 1), 8), ((3, 3), (2, 2), 16), ((3, 3), (2, 2), 32), ((7, 7), (1, 1), 3)
    ]
    ups = [m for m in net.model if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.kernel_size, u.output_padding, u.out_channels) for u in ups] == [
        ((3, 3), (1, 1), 16), ((3, 3), (1, 1), 8)
    ]
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3


def test_state_dict_keys_follow_the_reference_layout():
    # same module tree as the reference, so its released weights load with load_state_dict(strict=True)
    resnet = build_generator("resnet_9blocks", 3, 3, ngf=4, norm="instance").state_dict()
    assert {"model.1.weight", "model.1.bias", "model.10.conv_block.1.weight", "model.26.weight"} <= set(resnet)
    unet = build_generator("unet_32", 3, 3, ngf=4, norm="batch").state_dict()
    assert {"model.model.0.weight", "model.model.1.model.2.running_mean", "model.model.3.bias"} <= set(unet)
    patch = build_discriminator("basic", 3, ndf=4, norm="batch").state_dict()
    assert {"model.0.weight", "model.3.weight", "model.11.weight", "model.11.bias"} <= set(patch)


def test_resize_upsampling_has_no_transposed_convs():
    net = build_generator("resnet_1blocks", 3, 3, ngf=4, upsample="resize")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert sum(isinstance(m, nn.Upsample) for m in net.modules()) == 2


@pytest.mark.parametrize(
    "name, message",
    [
        ("resnet", "unknown generator 'resnet'"),
        ("vgg_16", "resnet_<k>blocks"),
        ("unet_100", "power of two >= 32"),
        ("unet_16", "power of two >= 32"),
        ("resnet_0blocks", "k >= 1"),
    ],
)
def test_invalid_generator_names_raise_helpful_messages(name, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        build_generator(name, 3, 3, ngf=4)
    if message.startswith("unknown"):
        assert "unet_<N>" in str(info.value) and "resnet_<k>blocks" in str(info.value)


def test_build_generator_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown norm"):
        build_generator("unet_32", 3, 3, ngf=4, norm="layer")
    with pytest.raises(ValueError, match="unknown upsample"):
        build_generator("unet_32", 3, 3, ngf=4, upsample="bilinear")


# --- discriminators --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, n_layers, size, out_size, field",
    [("basic", 3, 64, 6, 70), ("n_layers", 1, 32, 14, 16), ("n_layers", 5, 64, 0, 286), ("pixel", 3, 16, 16, 1)],
)
def test_discriminator_shapes_and_receptive_fields(name, n_layers, size, out_size, field):
    net = build_discriminator(name, 6, ndf=4, n_layers_D=n_layers, norm="instance")
    assert net.receptive_field == field
    if out_size:
        assert net(torch.rand(2, 6, size, size)).shape == (2, 1, out_size, out_size)


def test_basic_discriminator_recipe():
    net = NLayerDiscriminator(3, ndf=8, n_layers=3, norm="batch")
    convs = [m for m in net.model if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0], c.bias is not None) for c in convs] == [
        (8, 2, True), (16, 2, False), (32, 2, False), (64, 1, False), (1, 1, True)
    ]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 3
    assert not isinstance(net.model[-1], nn.LeakyReLU)  # raw logits


def test_channel_multiplier_is_capped_at_8():
    net = NLayerDiscriminator(3, ndf=2, n_layers=5, norm="batch")
    assert [m.out_channels for m in net.model if isinstance(m, nn.Conv2d)] == [2, 4, 8, 16, 16, 16, 1]


def test_pixel_discriminator_is_per_pixel():
    x = torch.rand(1, 3, 8, 8)
    assert PixelDiscriminator(3, ndf=4, norm="instance")(x).shape == (1, 1, 8, 8)
    # with no norm, a 1x1 network's output at a pixel depends on that pixel only
    plain = PixelDiscriminator(3, ndf=4, norm="none")
    x2 = x.clone()
    x2[..., 0, 0] += 1
    diff = (plain(x2) - plain(x)).abs()[0, 0]
    assert diff[0, 0] > 0 and diff.flatten()[1:].max() == 0


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_mixgan_patch_recipe():
    # MIXGAN style D: Conv4 s1 64 LReLU; Conv2 s1 128 IN LReLU; Conv1 s1 256 IN LReLU; Conv4 s1 -> 1
    recipe = [(64, 4, 1, False), (128, 2, 1, True), (256, 1, 1, True), (1, 4, 1, False)]
    net = PatchDiscriminator(3, recipe, norm="instance", padding="same")
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert net.receptive_field == 8
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 2
    assert sum(isinstance(m, nn.LeakyReLU) for m in net.modules()) == 3


def test_tpfr_patch_recipe():
    # TPFR D: padding 2; Conv4 s2 64; s2 128 IN; s1 256 IN; s1 512 IN; s1 -> 1
    recipe = [PatchLayer(64, 4, 2), PatchLayer(128, 4, 2, norm=True), PatchLayer(256, 4, 1, norm=True),
              PatchLayer(512, 4, 1, norm=True), PatchLayer(1, 4, 1)]
    net = PatchDiscriminator(6, recipe, norm="instance", padding=2)
    # 64 -> 33 -> 17 -> 18 -> 19 -> 20 (each s1 k4 conv with padding 2 grows the map by one)
    assert net(torch.rand(1, 6, 64, 64)).shape == (1, 1, 20, 20)
    assert [m.out_channels for m in net.model if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512, 1]


def test_invalid_discriminator_name():
    with pytest.raises(ValueError, match=r"unknown discriminator 'patch'.*'basic', 'n_layers', 'pixel'"):
        build_discriminator("patch", 3)
    with pytest.raises(ValueError, match="at least one layer"):
        PatchDiscriminator(3, [])


def test_bare_unwraps_distributed_data_parallel(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        net = nn.Linear(2, 2)
        assert bare(nn.parallel.DistributedDataParallel(net)) is net
    finally:
        dist.destroy_process_group()
