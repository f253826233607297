import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from headtex.inpaint import (
    Critic,
    GatedConv2d,
    Generator,
    InpaintNet,
    VGG16Features,
    composite,
    critic_loss,
    generator_gan_loss,
    generator_loss,
    init_weights,
    masked_l1,
)

VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21]  # torchvision vgg16.features convs up to conv4_3


def gated_params(k: int, cin: int, cout: int) -> int:
    return k * k * cin * 2 * cout + 2 * cout


def conv_params(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def expected_inpaintnet_params(c: int, cin: int = 4, cout: int = 3) -> int:
    layers = [(7, cin, c), (4, c, 2 * c), (3, 2 * c, 4 * c), (4, 4 * c, 4 * c)]
    layers += [(3, 4 * c, 4 * c)] * 8
    layers += [(3, 4 * c, 2 * c), (3, 2 * c, 2 * c), (3, 2 * c, c), (7, c, cout)]
    return sum(gated_params(*layer) for layer in layers)


def expected_critic_params(c: int) -> int:
    layers = [(7, 4, c), (4, c, 2 * c), (4, 2 * c, 4 * c), (4, 4 * c, 4 * c), (4, 4 * c, 4 * c), (4, 4 * c, 1)]
    return sum(conv_params(*layer) for layer in layers)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    hole = torch.zeros(n, 1, size, size)
    hole[..., size // 4 : size // 2, size // 4 : 3 * size // 4] = 1
    return image, hole


# ---- networks ----


def test_gated_conv_is_one_conv_with_2x_outputs():
    layer = GatedConv2d(5, 7, 3, norm=False)
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].out_channels == 14
    x = torch.randn(2, 5, 8, 8)
    feature, gate = convs[0](x).split(7, dim=1)
    torch.testing.assert_close(layer(x), F.relu(feature) * torch.sigmoid(gate))
    last = GatedConv2d(5, 3, 7, activation=False, norm=False)
    feature, gate = last.conv(x).split(3, dim=1)
    torch.testing.assert_close(last(x), feature * torch.sigmoid(gate))


@pytest.mark.parametrize("k,stride,dilation,out_size", [(7, 1, 1, 16), (3, 1, 16, 16), (3, 1, 2, 16), (4, 2, 1, 8)])
def test_gated_conv_padding(k, stride, dilation, out_size):
    layer = GatedConv2d(2, 3, k, stride=stride, dilation=dilation)
    assert layer(torch.randn(1, 2, 16, 16)).shape == (1, 3, out_size, out_size)


def test_gated_conv_norm_only_in_body():
    net = InpaintNet(latent=4)
    gated = [m for m in net.modules() if isinstance(m, GatedConv2d)]
    assert len(gated) == 16
    assert gated[0].norm is None and gated[-1].norm is None and not gated[-1].activation
    assert all(g.norm is not None and g.activation for g in gated[1:-1])


@pytest.mark.parametrize("size", [192, 64])
def test_generator_shapes_and_range(size):
    torch.manual_seed(0)
    gen = Generator(latent=4)
    image, hole = random_batch(2, size)
    with torch.no_grad():
        coarse, refined = gen(image, hole)
    assert coarse.shape == refined.shape == (2, 3, size, size)
    for out in (coarse, refined):
        assert out.min() >= -1 and out.max() <= 1


def test_generator_rejects_size_not_divisible_by_4():
    gen = Generator(latent=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        gen(torch.zeros(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))


@pytest.mark.parametrize("latent", [64, 16])
def test_parameter_counts(latent):
    assert n_params(InpaintNet(latent=latent)) == expected_inpaintnet_params(latent)
    assert n_params(Generator(latent=latent)) == 2 * expected_inpaintnet_params(latent)
    assert n_params(Critic(latent=latent)) == expected_critic_params(latent)


@pytest.mark.parametrize("size,patch", [(192, 6), (64, 2)])
def test_critic_patch_map(size, patch):
    # 7x7 s1 keeps size, then five 4x4 s2 convs halve it: 192 / 32 = 6
    critic = Critic(latent=2)
    image, hole = random_batch(2, size)
    assert critic(torch.cat([image, hole], dim=1)).shape == (2, 1, patch, patch)


def test_critic_is_spectral_normed():
    critic = Critic(latent=2)
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    assert all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in convs)


def test_init_weights():
    torch.manual_seed(0)
    for net in (Generator(latent=8), Critic(latent=8)):
        init_weights(net)
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        for m in convs:
            assert torch.all(m.bias == 0)
        w = convs[2].parametrizations.weight.original if hasattr(convs[2], "parametrizations") else convs[2].weight
        fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
        expected_std = 0.02 * (2 / (fan_in + fan_out)) ** 0.5
        assert abs(w.std().item() / expected_std - 1) < 0.1


# ---- losses ----


def test_composite_keeps_known_region_exactly():
    target, hole = random_batch(2, 16, seed=1)
    output = torch.randn_like(target)
    comp = composite(output, target, hole)
    known = hole.expand_as(target) == 0
    assert torch.equal(comp[known], target[known])
    assert torch.equal(comp[~known], output[~known])


def test_masked_l1_perfect_is_zero():
    target, hole = random_batch(2, 16)
    l1_all, l1_missing = masked_l1(target.clone(), target, hole)
    assert l1_all.item() == 0 and l1_missing.item() == 0
    l1_all, l1_missing = masked_l1(torch.randn_like(target), target, torch.zeros_like(hole))
    assert l1_all.item() == 0 and l1_missing.item() == 0


def test_masked_l1_hand_value():
    target = torch.rand(2, 3, 8, 8) * 2 - 1
    hole = torch.zeros(2, 1, 8, 8)
    hole[..., :4] = 1  # left half missing
    output = target + 0.5 * hole - 3.0 * (1 - hole)  # errors outside the hole must not count
    l1_all, l1_missing = masked_l1(output, target, hole)
    assert l1_all.item() == pytest.approx(0.25)
    assert l1_missing.item() == pytest.approx(0.5)


def test_wgan_losses():
    torch.manual_seed(0)
    critic = Critic(latent=2)
    real, hole = random_batch(2, 64)
    fake = torch.randn_like(real, requires_grad=True)
    loss_d = critic_loss(critic, real, fake, hole)
    loss_d.backward()
    assert fake.grad is None  # fake is detached for the critic
    loss_g = generator_gan_loss(critic, fake, hole)
    loss_g.backward()
    assert fake.grad is not None
    critic.eval()  # freeze the spectral-norm power iteration so scores are comparable
    with torch.no_grad():
        d_real = critic(torch.cat([real, hole], 1)).mean()
        d_fake = critic(torch.cat([fake, hole], 1)).mean()
        torch.testing.assert_close(critic_loss(critic, real, fake, hole), d_fake - d_real)
        torch.testing.assert_close(generator_gan_loss(critic, fake, hole), -d_fake)


def test_hole_weighting_counts_a_small_hole_like_a_large_one():
    """l1_weighting hole: the mean over samples of each one's L1 on its own hole; pixels: area-weighted."""
    from headtex.inpaint.losses import hole_normalised_l1

    target = torch.zeros(2, 3, 8, 8)
    output = torch.zeros(2, 3, 8, 8)
    hole = torch.zeros(2, 1, 8, 8)
    hole[0, :, :1, :1] = 1  # one texel, error 1
    hole[1, :, :4, :8] = 1  # 32 texels, error 0.5
    output[0] += 1.0
    output[1] += 0.5
    assert hole_normalised_l1(output, target, hole).item() == pytest.approx((1.0 + 0.5) / 2)
    assert masked_l1(output, target, hole)[1].item() == pytest.approx((1 + 32 * 0.5) / 33)
    hole[0] = 0  # a sample without a hole adds nothing
    assert hole_normalised_l1(output, target, hole).item() == pytest.approx(0.5 / 2)
    critic, vgg = Critic(4), VGG16Features()
    total, parts = generator_loss(output, output, target, hole, critic, vgg, 100.0, 0.0, 0.0, "hole")
    assert total.item() == pytest.approx(100.0 * 2 * 0.25)
    with pytest.raises(ValueError, match="unknown l1_weighting"):
        generator_loss(output, output, target, hole, critic, vgg, 100.0, 0.0, 0.0, "area")


def test_generator_loss_total_matches_parts():
    torch.manual_seed(0)
    gen, critic, vgg = Generator(latent=4), Critic(latent=2), VGG16Features()
    image, hole = random_batch(1, 32)
    coarse, refined = gen(image, hole)
    total, parts = generator_loss(coarse, refined, image, hole, critic, vgg)
    assert set(parts) == {
        "first_mask_l1", "second_mask_l1", "first_mask_l1_missing", "second_mask_l1_missing", "perceptual", "gan"
    }
    # detached 0-d tensors: reading them (a device sync) is the caller's choice, once per step
    assert all(v.ndim == 0 and not v.requires_grad for v in parts.values())
    parts = {k: v.item() for k, v in parts.items()}
    expected = 100 * (parts["first_mask_l1"] + parts["second_mask_l1"]) + 10 * parts["perceptual"] + 10 * parts["gan"]
    assert total.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)
    total.backward()
    assert all(p.grad is not None for p in gen.parameters())
    assert all(p.grad is None for p in vgg.parameters())


def test_training_steps_lower_masked_l1():
    torch.manual_seed(0)
    gen = Generator(latent=8)
    image, hole = random_batch(2, 32)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)

    def loss_fn() -> torch.Tensor:
        coarse, refined = gen(image, hole)
        return masked_l1(coarse, image, hole)[0] + masked_l1(refined, image, hole)[0]

    with torch.no_grad():
        before = loss_fn().item()
    for _ in range(20):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn().item()
    assert after < 0.9 * before


# ---- VGG ----


def test_vgg_keys_match_torchvision():
    vgg = VGG16Features()
    expected = [f"features.{i}.{p}" for i in VGG_CONV_INDICES for p in ("weight", "bias")]
    assert list(vgg.state_dict().keys()) == expected
    assert len(vgg.features) == 23 and isinstance(vgg.features[22], nn.ReLU)
    assert [i for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)] == [4, 9, 16]


def test_vgg_frozen_eval_and_shape():
    vgg = VGG16Features()
    assert not vgg.pretrained and not vgg.training
    assert not any(p.requires_grad for p in vgg.parameters())
    assert vgg(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 4, 4)


def test_vgg_random_init_is_deterministic():
    a, b, c = VGG16Features(seed=3), VGG16Features(seed=3), VGG16Features(seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


def test_vgg_load_round_trip(tmp_path):
    source = VGG16Features(seed=7)
    path = tmp_path / "vgg.pt"
    torch.save(source.state_dict(), path)
    loaded = VGG16Features(path)
    assert loaded.pretrained
    for (k, va), vb in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(va, vb), k
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_vgg_loads_full_torchvision_style_dict(tmp_path):
    source = VGG16Features(seed=7)
    state = dict(source.state_dict())
    for i in (24, 26, 28):  # conv5_x and the classifier are present in torchvision's dict but unused
        state[f"features.{i}.weight"] = torch.zeros(512, 512, 3, 3)
        state[f"features.{i}.bias"] = torch.zeros(512)
    state["classifier.0.weight"] = torch.zeros(4, 8)
    path = tmp_path / "vgg16_full.pth"
    torch.save(state, path)
    loaded = VGG16Features(path)
    assert loaded.pretrained
    assert torch.equal(loaded.features[21].weight, source.features[21].weight)


def test_vgg_bad_files_raise_value_error(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="corrupt.pt"):
        VGG16Features(corrupt)

    state = dict(VGG16Features().state_dict())
    state["features.21.weight"] = torch.zeros(512, 256, 3, 3)
    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save(state, wrong_shape)
    with pytest.raises(ValueError, match="wrong_shape.pt"):
        VGG16Features(wrong_shape)

    del state["features.21.weight"]
    missing = tmp_path / "missing.pt"
    torch.save(state, missing)
    with pytest.raises(ValueError, match="missing.pt"):
        VGG16Features(missing)


# ---- symres: residual over the mirror-guided Poisson fill ----


COLOUR_ARCHS = ["symres3", "blend3", "blend3x"]  # nets that work in the known texels' own colours


def symres_batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth images in [-1,1] (exactly representable as uint8) and a hole that straddles the symmetry axis
    on one row band and has a known mirror on another."""
    g = torch.Generator().manual_seed(1)
    levels = torch.randint(0, 256, (2, 3, 4, 4), generator=g).float()
    image = F.interpolate(levels, size=(size, size), mode="nearest") / 127.5 - 1
    hole = torch.zeros(2, 1, size, size)
    hole[..., 4:12, 2:10] = 1  # mirror (columns 22-29) known
    hole[..., 18:26, 12:20] = 1  # mirror of itself: no known mirror texel
    return image, hole


def test_symres_shapes_and_one_stage_interface():
    from headtex.inpaint import SymmetricResidual

    net = SymmetricResidual(4, 32)
    image, hole = symres_batch()
    coarse, refined = net(image, hole)
    assert coarse.shape == refined.shape == (2, 3, 32, 32) and coarse is refined
    assert net.forward_refine(image, hole, coarse) is coarse
    with pytest.raises(ValueError, match="built for"):
        net.forward_coarse(image[..., :16, :16], hole[..., :16, :16])


def test_symres_starts_as_the_classical_fill_even_after_init_weights():
    """Zero-initialised residual head: at step 0 the completion is exactly fills.fill_poisson_mirror."""
    from headtex.inpaint import SymmetricResidual, build_generator
    from headtex.inpaint.fills import fill_poisson_mirror
    from headtex.inpaint.model import to_uint8

    net = init_weights(build_generator("symres", 4, 32), 0.02)
    assert isinstance(net, SymmetricResidual) and not net.head.weight.any()
    image, hole = symres_batch()
    completed = to_uint8(composite(net.forward_coarse(image, hole), image, hole))
    known = to_uint8(image * (1 - hole) - hole)  # holes black: the fill must not read them
    regions = hole[:, 0].numpy() > 0.5
    for i in range(2):
        np.testing.assert_array_equal(completed[i], fill_poisson_mirror(known[i], regions[i]))


def test_symres_sees_the_mirrored_texture_and_its_prior():
    """Its input holds the mirrored known texels, mean texture and valid region: changing a known texel on the
    other side, or the mean texture, changes the output under the hole once the head is non-zero."""
    from headtex.inpaint import SymmetricResidual

    torch.manual_seed(0)
    net = SymmetricResidual(4, 32)
    nn.init.normal_(net.head.weight, std=0.1)
    image, hole = symres_batch()
    hole[..., 4:12, 22:30] = 1  # now the band's mirror is missing too: no copying, only the network's input
    base = net.forward_coarse(image, hole)
    other = image.clone()
    other[..., 4:12, 0:2] = -other[..., 4:12, 0:2]  # known texels left of the band
    assert not torch.equal(net.forward_coarse(other, hole)[..., 4:12, 22:30], base[..., 4:12, 22:30])
    net.set_prior(np.full((32, 32, 3), 200, np.uint8), np.ones((32, 32), bool))
    assert net.mean_texture.max() == pytest.approx(200 / 127.5 - 1)
    assert not torch.equal(net.forward_coarse(image, hole), base)


def test_symres2_starts_as_the_average_of_navier_stokes_and_the_mirror_guided_fill():
    """symres2's zero head: weight 1/2 on each fill and no residual, even after init_weights (to one uint8 level:
    the average of two levels can be a half)."""
    from headtex.inpaint import build_generator
    from headtex.inpaint.fills import fill_opencv, fill_poisson_mirror
    from headtex.inpaint.model import to_uint8

    net = init_weights(build_generator("symres2", 4, 32), 0.02)
    assert net.head.out_channels == 4 and not net.head.weight.any() and net.enc1.conv.in_channels == 15
    image, hole = symres_batch()
    completed = to_uint8(composite(net.forward_coarse(image, hole), image, hole)).astype(int)
    known = to_uint8(image * (1 - hole) - hole)
    regions = hole[:, 0].numpy() > 0.5
    for i in range(2):
        average = (fill_poisson_mirror(known[i], regions[i]).astype(int) + fill_opencv(known[i], regions[i], "navier_stokes")) / 2
        assert np.abs(completed[i] - average).max() <= 0.5
        assert not np.array_equal(completed[i], fill_poisson_mirror(known[i], regions[i]))  # not symres' start


def test_symres2_blend_weight_picks_between_the_two_fills():
    """A large blend logit gives the Navier-Stokes fill, a very negative one the mirror-guided fill."""
    from headtex.inpaint import build_generator

    net = build_generator("symres2", 4, 32)
    image, hole = symres_batch()
    fills = net.prior(image, hole)
    for bias, expected in ((40.0, fills[:, 3:]), (-40.0, fills[:, :3])):
        with torch.no_grad():
            net.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, bias]))
        torch.testing.assert_close(net.forward_coarse(image, hole), expected.clamp(-1, 1), atol=1e-6, rtol=0)


def test_symres3_starts_as_the_average_of_the_two_fills_like_symres2():
    """symres3's zero head: the same start as symres2 (to one uint8 level), whatever the colour statistics."""
    from headtex.inpaint import build_generator
    from headtex.inpaint.model import to_uint8

    image, hole = symres_batch()
    symres2, symres3 = (init_weights(build_generator(arch, 4, 32), 0.02) for arch in ("symres2", "symres3"))
    assert not symres3.head.weight.any()
    first, second = (to_uint8(composite(net.forward_coarse(image, hole), image, hole)).astype(int)
                     for net in (symres2, symres3))
    assert np.abs(first - second).max() <= 1


def colour_residual(seed: int = 0, arch: str = "symres3"):
    """A symres3 (or another net in the known texels' colours) with a non-zero head (as after training) and a
    colourful mean texture."""
    from headtex.inpaint import build_generator

    torch.manual_seed(seed)
    net = build_generator(arch, 4, 32)
    nn.init.normal_(net.head.weight, std=0.3)
    nn.init.normal_(net.head.bias, std=0.3)
    rng = np.random.default_rng(seed)
    net.set_prior(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8), np.ones((32, 32), bool))
    return net.eval()


@pytest.mark.parametrize("arch", COLOUR_ARCHS)
def test_a_grey_texture_completes_grey(arch):
    """A grey photo's texture completes grey: every channel equal in the hole, though the net's head and its mean
    texture are colourful (a colourful completion of a grey face was the shipped symres2's failure on einstein)."""
    net = colour_residual(arch=arch)
    image, hole = symres_batch()
    grey = image.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    with torch.no_grad():
        completed = net.forward_coarse(grey, hole)
        coloured = net.forward_coarse(image, hole)
    assert (completed - completed[:, :1]).abs().max() < 1e-5
    assert (coloured - coloured.mean(dim=1, keepdim=True)).abs().max() > 0.05  # not a net that only paints grey


@pytest.mark.parametrize("arch", COLOUR_ARCHS)
def test_a_colour_cast_carries_into_the_hole(arch):
    """A photo with a colour cast completes with it: the hole's mean colour moves by the cast the known texels
    carry (their mean), as the residual is scaled by the known texels' own colour statistics."""
    net = colour_residual(arch=arch)
    image, hole = symres_batch()
    cast = torch.tensor([0.25, 0.0, -0.25]).view(1, 3, 1, 1)  # warmer: more red, less blue
    with torch.no_grad():
        plain = net.forward_coarse(image * 0.5, hole)
        warm = net.forward_coarse(image * 0.5 + cast, hole)
    in_hole = hole.expand(-1, 3, -1, -1) > 0.5
    shift = torch.stack([(warm - plain)[:, c][in_hole[:, c]].mean() for c in range(3)])
    torch.testing.assert_close(shift, cast.view(3), atol=0.02, rtol=0)



@pytest.mark.parametrize("arch", ["blend3", "blend3x"])
def test_blend3_paints_nothing_of_its_own_only_a_blend_of_its_candidate_fills(arch):
    """blend3: each hole texel is a convex blend of the candidate fills, whatever the head; at initialisation the
    even blend of the mirror-guided Poisson fill and Navier-Stokes (symres2's start) when those are the two."""
    from headtex.inpaint import build_generator
    from headtex.inpaint.networks import _opponent, _rgb, colour_statistics

    net = colour_residual(arch=arch)
    image, hole = symres_batch()
    fills = net.prior(image, hole)
    candidates = [fills[:, :3], fills[:, 3:]]
    if arch == "blend3x":
        known = 1 - hole
        mean, spread = colour_statistics(image, known)
        prior_mean, prior_spread = colour_statistics(net.mean_texture.expand(2, -1, -1, -1), known)
        candidates.append(_rgb((_opponent(net.mean_texture) - prior_mean) / prior_spread.clamp(min=0.02) * spread + mean))
    stacked = torch.stack(candidates)
    with torch.no_grad():
        out = net.forward_coarse(image, hole)
    assert (out >= stacked.min(0).values.clamp(-1, 1) - 1e-5).all() and (out <= stacked.max(0).values.clamp(-1, 1) + 1e-5).all()
    for k, candidate in enumerate(candidates):  # a head sure of one candidate returns it
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.copy_(torch.tensor([40.0 if c == k else 0.0 for c in range(len(candidates)) for _ in range(4)]))
            torch.testing.assert_close(net.forward_coarse(image, hole), candidate.clamp(-1, 1), atol=1e-5, rtol=0)
    if arch == "blend3":
        fresh = init_weights(build_generator(arch, 4, 32), 0.02)
        with torch.no_grad():
            torch.testing.assert_close(fresh.forward_coarse(image, hole), ((fills[:, :3] + fills[:, 3:]) / 2).clamp(-1, 1))

def test_build_generator_names_the_archs():
    from headtex.inpaint import ARCHS, SymmetricResidual, build_generator

    assert ARCHS == ("deepfillv2", "symres", "symres2", "symres3", "blend3", "blend3x")
    assert isinstance(build_generator("deepfillv2", 4, 32), Generator)
    assert isinstance(build_generator("symres", 4, 32), SymmetricResidual)
    assert build_generator("symres2", 4, 32).blend and not build_generator("symres", 4, 32).blend
    with pytest.raises(ValueError, match="unknown model arch 'unet'"):
        build_generator("unet", 4, 32)


@pytest.mark.parametrize("arch", ["deepfillv2", "symres", "symres2", "symres3", "blend3", "blend3x"])
@pytest.mark.parametrize("half", [False, True])
def test_model_file_records_the_arch_and_round_trips(tmp_path, arch, half):
    from headtex.inpaint import build_generator
    from headtex.inpaint.model import load_critic, load_inpainter, save_inpainter

    torch.manual_seed(0)
    gen, critic = build_generator(arch, 4, 32), Critic(4)
    if arch != "deepfillv2":
        nn.init.normal_(gen.head.weight, std=0.1)
        gen.set_prior(np.full((32, 32, 3), 90, np.uint8), np.ones((32, 32), bool))
    save_inpainter(tmp_path / "m.pt", gen, 4, "coarse", 32, critic=critic, half=half)
    stored = torch.load(tmp_path / "m.pt", weights_only=True)
    assert stored["arch"] == arch
    assert {v.dtype for v in stored["generator"].values()} == {torch.float16 if half else torch.float32}
    loaded, info = load_inpainter(tmp_path / "m.pt")
    assert info == {"arch": arch, "latent": 4, "ship_output": "coarse", "uv_size": 32}
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    image, hole = symres_batch()
    with torch.no_grad():
        expected, got = gen.forward_coarse(image, hole), loaded.forward_coarse(image, hole)
    torch.testing.assert_close(got, expected, atol=2e-2 if half else 0, rtol=0)
    assert load_critic(tmp_path / "m.pt", 4) is not None


def test_a_model_file_without_arch_is_deepfillv2_and_an_unknown_arch_is_one_line(tmp_path):
    from headtex.inpaint.model import load_inpainter, save_inpainter
    from headtex.io import UserError

    save_inpainter(tmp_path / "old.pt", Generator(4), 4, "coarse", 32)
    content = torch.load(tmp_path / "old.pt", weights_only=True)
    del content["arch"]  # as written before symres existed
    torch.save(content, tmp_path / "old.pt")
    assert isinstance(load_inpainter(tmp_path / "old.pt")[0], Generator)
    content["arch"] = "unet"
    torch.save(content, tmp_path / "new.pt")
    with pytest.raises(UserError, match=r"new.pt: unknown model arch 'unet' \(this headtex knows deepfillv2, symres, symres2, symres3, blend3, blend3x\)"):
        load_inpainter(tmp_path / "new.pt")
    content["arch"] = "symres"  # deepfillv2 weights under the symres name
    torch.save(content, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match=r"wrong.pt: symres generator \(latent 4\) weights do not fit"):
        load_inpainter(tmp_path / "wrong.pt")
