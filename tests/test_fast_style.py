"""Fast neural style (``methods/fast``) against its authors' computation.

The reference is pytorch/examples ``fast_neural_style/neural_style/transformer_net.py`` (commit 01c54ac),
``utils.py`` (``gram_matrix``, ``normalize_batch``; commit 2b456e8) and the training step of ``neural_style.py``
(commit 0fb0ddd), written out below from the published code: float32 on the CPU, bit for bit.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import RANDOM_ENCODER

from styletransfer.methods.fast.network import TransformerNet
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError


class RefConvLayer(torch.nn.Module):  # transformer_net.py ConvLayer
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class RefResidualBlock(torch.nn.Module):  # transformer_net.py ResidualBlock
    def __init__(self, channels):
        super().__init__()
        self.conv1 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class RefUpsampleConvLayer(torch.nn.Module):  # transformer_net.py UpsampleConvLayer
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        if upsample:
            self.upsample_layer = torch.nn.Upsample(mode="nearest", scale_factor=upsample)
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        x_in = self.upsample_layer(x) if self.upsample else x
        return self.conv2d(self.reflection_pad(x_in))


class RefTransformerNet(torch.nn.Module):  # transformer_net.py TransformerNet
    def __init__(self):
        super().__init__()
        self.conv1 = RefConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(32, affine=True)
        self.conv2 = RefConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = torch.nn.InstanceNorm2d(64, affine=True)
        self.conv3 = RefConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = torch.nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (RefResidualBlock(128) for _ in range(5))
        self.deconv1 = RefUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = torch.nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = RefUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = torch.nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = RefConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = torch.nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def _lively(network: torch.nn.Module, seed: int = 0) -> None:
    """Normalisation scales and shifts away from the identity (the default init is 1 and 0), so they matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if ".in" in f".{name}" and name.rsplit(".", 1)[-1] in ("weight", "bias"):
                param.copy_(torch.rand(param.shape, generator=g) + (0.5 if name.endswith("weight") else -0.5))


def test_the_network_and_its_gradient_equal_the_examples_bit_for_bit():
    """Same state dict (the examples' names load as they are), same input in [0, 255]: equal output, and equal
    gradients after a backward of the same loss."""
    torch.manual_seed(0)
    reference = RefTransformerNet()
    _lively(reference)
    ours = TransformerNet()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, 3, 36, 44, generator=torch.Generator().manual_seed(1)) * 255
    out_ref, out = reference(x), ours(x)
    assert out.shape == x.shape and torch.equal(out, out_ref)
    out_ref.square().mean().backward()
    out.square().mean().backward()
    grads = dict(reference.named_parameters())
    assert all(torch.equal(p.grad, grads[name].grad) for name, p in ours.named_parameters())


def test_several_styles_blend_their_scales_and_shifts():
    """A network of 3 styles: a one-hot vector is that style's single-style network (its row of every scale and
    shift), a blend is the network whose scales and shifts are the blend of the rows."""
    torch.manual_seed(0)
    multi = TransformerNet(styles=3)
    _lively(multi, seed=2)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 255

    def single(weights: torch.Tensor) -> TransformerNet:
        net = TransformerNet()
        state = {k: (weights @ v if v.dim() == 2 and ".in" in f".{k}" else v) for k, v in multi.state_dict().items()}
        net.load_state_dict(state)
        return net

    for k in range(3):
        onehot = torch.nn.functional.one_hot(torch.tensor(k), 3).float()
        torch.testing.assert_close(multi(x, onehot), single(onehot)(x), rtol=0, atol=0)
    blend = torch.tensor([0.5, 0.5, 0.0])
    torch.testing.assert_close(multi(x, blend), single(blend)(x), rtol=0, atol=0)
    assert not torch.equal(multi(x, torch.tensor([1.0, 0, 0])), multi(x, torch.tensor([0, 1.0, 0])))
    with pytest.raises(ValueError, match="3 styles: give a weight vector of that length"):
        multi(x)


# ---------------------------------------------------------------- slimmer networks (method.width, .residual_blocks)

VGG16_RANDOM = {"weights": "random", "network": "vgg16"}


def test_a_width_scales_every_convolution_to_multiples_of_8_and_blocks_are_counted():
    """1.0 is the examples' 32/64/128 (the bit-for-bit test above); other widths scale every convolution's channels,
    rounded to the nearest multiple of 8 (at least 8); ``residual_blocks`` keeps res1..resN. Bad settings are one
    line naming the setting."""
    from styletransfer.methods.fast import FastStyleModule
    from styletransfer.methods.fast.network import channels

    assert channels(1.0) == (32, 64, 128) and channels(1) == (32, 64, 128)
    assert [channels(w) for w in (0.5, 0.35, 0.3, 0.25, 0.1, 2.0)] == [
        (16, 32, 64), (8, 24, 48), (8, 16, 40), (8, 16, 32), (8, 8, 16), (64, 128, 256)]
    net = TransformerNet(styles=2, width=0.25, residual_blocks=2)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["conv1.conv2d.weight"] == (8, 3, 9, 9) and shapes["conv3.conv2d.weight"] == (32, 16, 3, 3)
    assert shapes["res2.conv2.conv2d.weight"] == (32, 32, 3, 3) and shapes["deconv3.conv2d.weight"] == (3, 8, 9, 9)
    assert shapes["in5.weight"] == (2, 8) and not any(k.startswith("res3.") for k in shapes)
    x = torch.rand(1, 3, 36, 44) * 255
    assert net(x, torch.tensor([0.5, 0.5])).shape == x.shape
    assert net.layout() == {"width": 0.25, "residual_blocks": 2}
    for setting, message in (({"width": 0}, "method.width=0 must be a finite number > 0"),
                             ({"width": "half"}, "method.width='half' must be a finite number > 0"),
                             ({"residual_blocks": 0}, "method.residual_blocks=0 must be a whole number >= 1"),
                             ({"residual_blocks": 2.5}, "method.residual_blocks=2.5 must be a whole number >= 1")):
        with pytest.raises(ConfigError, match=message):
            FastStyleModule(VGG16_RANDOM, ["never_read.png"], **setting)


def test_a_slim_network_trains_and_lowers_the_loss(tmp_path):
    """experiment=fast_slim's width (8/16/40 channels) with two residual blocks: eight Adam steps at lr 1e-2 on one
    batch, behind a random VGG-16, lower the examples' loss to under 80%."""
    from conftest import compose
    from PIL import Image

    from styletransfer.methods.fast import FastStyleModule

    width = compose("train", "experiment=fast_slim", "method.styles=[x.png]").method.width
    Image.effect_mandelbrot((40, 48), (-2, -1.2, 0.8, 1.2), 60).convert("RGB").save(tmp_path / "style.png")
    torch.manual_seed(0)
    module = FastStyleModule(VGG16_RANDOM, [str(tmp_path / "style.png")], lr=1e-2, width=width, residual_blocks=2)
    assert module.network.channels == (8, 16, 40) and module.hparams["width"] == width == 0.3
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    optimiser = module.configure_optimizers()
    losses = []
    for _ in range(8):
        loss = module.losses(batch)["loss/total"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def _slim_file(tmp_path, styles=1):
    """A slim network (width 0.25, two blocks) with lively normalisations, written as network.pth."""
    from styletransfer.methods.fast.checkpoint import save_network

    torch.manual_seed(4)
    network = TransformerNet(styles, width=0.25, residual_blocks=2)
    _lively(network, seed=4)
    with torch.no_grad():  # an output around mid-grey with contrast (a random network's is near 0, then clamped)
        network.deconv3.conv2d.weight.mul_(300.0)
        network.deconv3.conv2d.bias.fill_(128.0)
    path = tmp_path / "network.pth"
    save_network(network, [f"s{i}" for i in range(styles)], VGG16_RANDOM, path)
    return network, path


def test_a_files_layout_rebuilds_the_network_and_a_mismatch_is_refused_naming_both(tmp_path):
    """network.pth and a Lightning checkpoint record the layout: loading rebuilds the slim network (its output is
    the one saved); a layout that does not fit the weights, or a slim state dict saved bare (read as the examples'
    layout), is one line naming both."""
    from styletransfer.methods.fast.checkpoint import read_network
    from styletransfer.protocol.registry import load_model
    from styletransfer.runtime.errors import CheckpointError

    network, path = _slim_file(tmp_path)
    model = load_model(path)
    assert model.network.channels == (8, 16, 32) and model.network.residual_blocks == 2
    assert model.describe()["width"] == 0.25 and model.describe()["residual_blocks"] == 2
    x = torch.rand(1, 3, 36, 44)
    with torch.no_grad():
        assert torch.equal(model.stylise(x), (network.eval()(x * 255) / 255).clamp(0, 1))
    lightning = {"state_dict": {f"network.{k}": v for k, v in network.state_dict().items()},
                 "hyper_parameters": {"styles": ["s0.png"], "width": 0.25, "residual_blocks": 2}}
    assert read_network(lightning, tmp_path / "last.ckpt")[0].channels == (8, 16, 32)
    lightning["hyper_parameters"]["residual_blocks"] = 3
    with pytest.raises(CheckpointError, match=r"last.ckpt records width 0.25 and 3 residual blocks: 8/16/32 channels "
                       r"and 3 residual blocks, but its weights are a network of 8/16/32 channels and 2 residual "
                       r"blocks: the file is damaged or was edited"):
        read_network(lightning, tmp_path / "last.ckpt")
    obj = torch.load(path, weights_only=True)
    obj["layout"]["width"] = 1.0
    torch.save(obj, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"edited.pth records width 1.0 and 2 residual blocks: 32/64/128 "
                       r"channels and 2 residual blocks, but its weights are a network of 8/16/32 channels"):
        load_model(tmp_path / "edited.pth")
    torch.save(network.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"bare.pth records no layout \(the examples'\): 32/64/128 channels "
                       r"and 5 residual blocks, but its weights are a network of 8/16/32 channels and 2 residual"):
        load_model(tmp_path / "bare.pth")
    obj["layout"]["width"] = -1
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad.pth records a network layout that cannot be built: width=-1"):
        load_model(tmp_path / "bad.pth")


# ---------------------------------------------------------------- the examples' loss and training step


def ref_gram_matrix(y):  # utils.py gram_matrix
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    return features.bmm(features_t) / (ch * h * w)


def ref_normalize_batch(batch):  # utils.py normalize_batch
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


class RefVgg16(torch.nn.Module):  # vgg.py Vgg16 (torchvision's vgg16().features cut after relu1_2 .. relu4_3)
    def __init__(self, features):
        super().__init__()
        self.slice1, self.slice2 = torch.nn.Sequential(*features[:4]), torch.nn.Sequential(*features[4:9])
        self.slice3, self.slice4 = torch.nn.Sequential(*features[9:16]), torch.nn.Sequential(*features[16:23])

    def forward(self, X):
        h_relu1_2 = self.slice1(X)
        h_relu2_2 = self.slice2(h_relu1_2)
        h_relu3_3 = self.slice3(h_relu2_2)
        h_relu4_3 = self.slice4(h_relu3_3)
        return h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3


def test_a_tv_weight_adds_the_outputs_total_variation(tmp_path):
    """method.tv_weight (0 by default, as the examples): tv_weight x the mean squared forward difference of the
    output in [0, 255], added to the total; 0 leaves the terms as they were."""
    from styletransfer.data.images import save_image
    from styletransfer.methods.fast import FastStyleModule

    save_image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)), tmp_path / "style.png")
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    plain = FastStyleModule({**RANDOM_ENCODER, "network": "vgg16"}, [str(tmp_path / "style.png")])
    torch.manual_seed(0)
    smooth = FastStyleModule({**RANDOM_ENCODER, "network": "vgg16"}, [str(tmp_path / "style.png")], tv_weight=1e-3)
    with torch.no_grad():
        base, terms = plain.losses(batch), smooth.losses(batch)
        output = smooth.network(batch.mul(255.0), None)
    dx, dy = output.diff(dim=3), output.diff(dim=2)
    tv = (dx.pow(2).sum() + dy.pow(2).sum()) / output.numel()
    assert "loss/tv" not in base and torch.equal(terms["loss/style"], base["loss/style"])
    torch.testing.assert_close(terms["loss/tv"], 1e-3 * tv, rtol=1e-6, atol=0)
    torch.testing.assert_close(terms["loss/total"], base["loss/total"] + terms["loss/tv"], rtol=1e-6, atol=0)
    with pytest.raises(ConfigError, match="method.tv_weight=-1"):
        FastStyleModule({**RANDOM_ENCODER, "network": "vgg16"}, [str(tmp_path / "style.png")], tv_weight=-1)


def test_one_training_step_equals_the_examples_bit_for_bit(tmp_path):
    """neural_style.py's step on the same batch, style and weights (a seeded VGG-16 saved as a file both load):
    the loss terms, and the network's weights after one Adam step at lr 1e-3, are equal bit for bit (the style's
    Gram matrices to float32 rounding: see below)."""
    from conftest import vgg16_features_file

    from styletransfer.data.images import save_image
    from styletransfer.methods.fast import FastStyleModule

    torch.manual_seed(0)
    weights_file = tmp_path / "vgg16.pth"
    features = vgg16_features_file(weights_file)  # as neural_style.py's VGG-16 reads it
    g = torch.Generator().manual_seed(1)
    save_image(torch.rand(3, 40, 48, generator=g), tmp_path / "style.png")
    ours = FastStyleModule({"weights": str(weights_file), "network": "vgg16"}, [str(tmp_path / "style.png")])
    reference = RefTransformerNet()
    reference.load_state_dict(ours.network.state_dict())
    vgg = RefVgg16(features)
    for p in vgg.parameters():
        p.requires_grad_(False)

    from styletransfer.data.images import load_image_tensor

    batch = torch.rand(2, 3, 32, 32, generator=g)  # the data module's content in [0, 1]
    style = load_image_tensor(tmp_path / "style.png").mul(255).repeat(2, 1, 1, 1)
    gram_style = [ref_gram_matrix(y) for y in vgg(ref_normalize_batch(style))]
    # The examples compute the style's Gram matrices from the style repeated to the batch size; ours are computed
    # once, from a batch of one. The maths is the same, but oneDNN's convolutions round differently for a batch of 1
    # and of 2 (measured: the last bits of the Gram matrices): the targets agree to float32 rounding, and from here
    # on both use the batch-of-one values, so the rest of the step is compared bit for bit.
    for ours_gram, theirs in zip((ours.loss.gram_relu1_2, ours.loss.gram_relu2_2, ours.loss.gram_relu3_3,
                                  ours.loss.gram_relu4_3), gram_style):
        torch.testing.assert_close(ours_gram[0], theirs[0], rtol=1e-5, atol=1e-6 * float(theirs[0].abs().max()))
    one = load_image_tensor(tmp_path / "style.png").mul(255)[None]  # normalize_batch divided ``style`` in place
    gram_style = [ref_gram_matrix(y).repeat(2, 1, 1) for y in vgg(ref_normalize_batch(one))]
    x = batch.mul(255)  # transforms.ToTensor() then x.mul(255)
    y = reference(x)
    features_y, features_x = vgg(ref_normalize_batch(y)), vgg(ref_normalize_batch(x.clone()))
    content_loss = 1e5 * torch.nn.functional.mse_loss(features_y[1], features_x[1])
    style_loss = 0.0
    for ft_y, gm_s in zip(features_y, gram_style):
        style_loss += torch.nn.functional.mse_loss(ref_gram_matrix(ft_y), gm_s[:2, :, :])
    style_loss *= 1e10
    total = content_loss + style_loss
    terms = ours.losses(batch)
    assert torch.equal(terms["loss/content"], content_loss) and torch.equal(terms["loss/style"], style_loss)
    assert torch.equal(terms["loss/total"], total)
    ref_opt = torch.optim.Adam(reference.parameters(), 1e-3)
    our_opt = ours.configure_optimizers()
    total.backward()
    terms["loss/total"].backward()
    ref_opt.step()
    our_opt.step()
    ref_state = reference.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in ours.network.state_dict().items())


# ---------------------------------------------------------------- training, files, stylising, bad input


@pytest.fixture(scope="module")
def fast_data(tmp_path_factory):
    """Content photos (scikit-image's, 80 x 64) and two procedural style images."""
    import numpy as np
    from conftest import SKIMAGE_DATA
    from PIL import Image

    root = tmp_path_factory.mktemp("fast")
    (root / "content").mkdir()
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]:
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize((80, 64)).save(root / "content" / f"{name[:-4]}.png")
    y, x = np.mgrid[0:48, 0:56] / 6.0
    for i, name in enumerate(["waves", "checks"]):
        pattern = np.stack([np.sin(x * (i + 1) + c) * np.cos(y * (2 - i) - c) for c in range(3)], -1)
        Image.fromarray((pattern * 120 + 128).clip(0, 255).astype(np.uint8)).save(root / f"{name}.png")
    return root


#: experiment=fast_slim's kind of network (8/16/32 channels, two residual blocks) for the runs whose subject is not the
#: network's size (the data path, resuming, precision, the files, the commands); the examples' layout is trained in
#: test_one_training_step_equals_the_examples_bit_for_bit and exported in the ONNX test.
SLIM = ("method.width=0.25", "method.residual_blocks=2")


def _train(fast_data, run_dir, *styles, steps, extra=(), data=None, crop=32):
    from conftest import train_in_process

    names = ",".join(str(fast_data / f"{s}.png") for s in styles)
    data = data or ("data=folders", f"data.content_dir={fast_data / 'content'}", "data.short_side=48")
    return train_in_process("method=fast", *data, f"method.styles=[{names}]", "encoder.weights=random",
                            "trainer=cpu", "logger=csv", f"trainer.max_steps={steps}", f"data.crop_size={crop}",
                            "data.batch_size=2", "method.lr=1e-2", *extra, run_dir=run_dir)


def test_a_trained_module_is_a_benchmark_candidate_without_touching_its_parameters(fast_data):
    """What a sweep's objective scores: the network in memory, the pair's style ignored (its first style for
    several), while the module's own network keeps training (gradients on, training mode)."""
    from styletransfer.methods.fast import FastStyleModule
    from styletransfer.methods.fast.styler import run_network

    torch.manual_seed(0)
    styles = [str(fast_data / "waves.png"), str(fast_data / "checks.png")]
    module = FastStyleModule({"weights": "random", "network": "vgg16"}, styles)
    _lively(module.network)
    content, style = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 32, 32)
    candidate = module.trained_candidate("trial")
    with torch.no_grad():
        expected = run_network(module.network.eval(), content, torch.tensor([1.0, 0.0]))
    module.network.train()
    assert torch.equal(candidate.stylise(content, style, 1.0), expected)
    assert candidate.info["styles"] == ["waves", "checks"] and not candidate.supports_alpha
    assert module.network.training and all(p.requires_grad for p in module.network.parameters())


@pytest.fixture(scope="module")
def two_style_run(fast_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("two_styles")
    _train(fast_data, run, "waves", "checks", steps=4, extra=SLIM)
    return run / "checkpoints" / "network.pth"


def test_a_tiny_run_lowers_the_loss_and_writes_the_network(fast_data, tmp_path):
    """6 steps at lr 1e-2 on four photos with a random VGG-16 (content only: no style folder, no validation), of a
    slim network (SLIM): the loss falls to about half (0.50-0.51 over seeds 1, 2, 3 and 42; 12 steps gave 0.2)."""
    from styletransfer.methods.fast import FastStyleModule

    torch.manual_seed(0)
    module = FastStyleModule({"weights": "random", "network": "vgg16"}, [str(fast_data / "waves.png")], width=0.25,
                             residual_blocks=2)
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(module.losses(batch)["loss/total"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(fast_data, tmp_path, "waves", steps=6, extra=SLIM)
    shown = [str(w.message) for w in caught]
    assert not [m for m in shown if "validation_step" in m or "eval mode" in m], shown  # nothing a user can act on
    trained = torch.load(tmp_path / "checkpoints" / "network.pth", weights_only=True)
    assert trained["styles"] == ["waves"] and trained["encoder"]["network"] == "vgg16"
    module.network.load_state_dict(trained["network"])
    with torch.no_grad():
        after = float(module.losses(batch)["loss/total"])
    assert after < 0.8 * before, (before, after)


def test_two_styles_stylise_differently_and_a_blend_lies_between(two_style_run, fast_data, tmp_path, capsys):
    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.protocol.registry import load_model

    model = load_model(two_style_run)
    assert model.method == "fast" and model.describe()["styles"] == ["waves", "checks"]
    content = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    a, b = (model.stylise(content, controls=Controls(weights=weights)) for weights in ([1, 0], [0, 1]))
    mid = model.stylise(content, controls=Controls(weights=[0.5, 0.5]))
    gap = float((a - b).abs().mean())
    assert gap > 1e-3 and float((mid - a).abs().mean()) < gap and float((mid - b).abs().mean()) < gap
    common = [str(two_style_run), "--content", str(fast_data / "content"), "--device", "cpu", "--workers", "0"]
    assert stylise_main([*common, "--weights", "0.5", "0.5", "-o", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").iterdir())) == 4
    capsys.readouterr()
    for extra, message in ((["--weights", "1"], "got 1 interpolation weight(s) for 2 style(s)"),
                           ([], "has 2 styles (waves, checks): choose one or blend them"),
                           (["--style", str(fast_data / "waves.png")], "does not support --style"),
                           (["--weights", "0.5", "0.5", "--alpha", "0.5"], "does not support --alpha"),
                           (["--weights", "1", "0", "--transform", "wct"], "has no transform option")):
        assert stylise_main([*common, *extra, "-o", str(tmp_path / "bad")]) == 1, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_the_examples_saved_models_load_and_stylise(fast_data, tmp_path):
    """A bare state dict as the examples' training saves it (with the old InstanceNorm running_* entries their
    released models carry) stylises through the command: the network's output / 255, clamped, as their stylize."""
    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.data.images import load_image_tensor
    from styletransfer.protocol.registry import load_model

    torch.manual_seed(3)
    reference = RefTransformerNet()
    _lively(reference)
    state = reference.state_dict()
    state.update({"in1.running_mean": torch.zeros(32), "in1.running_var": torch.ones(32)})
    torch.save(state, tmp_path / "candy.pth")
    model = load_model(tmp_path / "candy.pth")
    assert model.method == "fast" and model.kind == "examples" and model.describe()["styles"] == ["candy"]
    content = load_image_tensor(fast_data / "content" / "coffee.png")[None]
    with torch.no_grad():
        expected = (reference(content * 255) / 255).clamp(0, 1)
    assert torch.equal(model.stylise(content), expected)
    assert stylise_main([str(tmp_path / "candy.pth"), "--content", str(fast_data / "content" / "coffee.png"), "-o",
                         str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert (tmp_path / "out").is_dir() and len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "junk.png").write_bytes(b"not an image"), "method.styles: cannot read image"),
    (lambda d: __import__("PIL.Image").Image.new("RGB", (8, 8)).save(d / "junk.png"), "at least 16 px"),
])
def test_a_bad_style_image_is_one_line_naming_it(fast_data, tmp_path, make, message):
    from styletransfer.methods.fast import FastStyleModule
    from styletransfer.runtime.errors import ConfigError

    make(tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        FastStyleModule({"weights": "random", "network": "vgg16"}, [str(tmp_path / "junk.png")])
    assert "junk.png" in str(info.value)
    with pytest.raises(ConfigError, match="two style files are both called waves"):
        FastStyleModule({"weights": "random", "network": "vgg16"},
                        [str(fast_data / "waves.png"), str(tmp_path / "waves.png")])


def test_content_only_data_and_a_pair_method_without_styles(fast_data, tmp_path):
    """data.style_dir unset: batches hold only content; val_pairs need styles; method=adain names the missing key."""
    from conftest import train_in_process

    from styletransfer.data import ContentStyleDataModule
    from styletransfer.runtime.errors import ConfigError

    module = ContentStyleDataModule(str(fast_data / "content"), short_side=48, crop_size=32, batch_size=2,
                                    num_workers=0, val_pairs=0)
    batch = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert set(batch) == {"content"} and batch["content"].shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match="data.val_pairs=2 needs data.style_dir"):
        ContentStyleDataModule(str(fast_data / "content"), batch_size=2, val_pairs=2)
    with pytest.raises(ConfigError, match="method=adain trains on content-style pairs: give data.style_dir"):
        train_in_process("data=folders", f"data.content_dir={fast_data / 'content'}", "data.val_pairs=0",
                         "data.batch_size=2",
                         "encoder.weights=random", "trainer=cpu", "logger=none", "trainer.max_steps=1",
                         run_dir=tmp_path / "run")


@pytest.fixture(scope="module")
def content_cache(fast_data, tmp_path_factory):
    """A JPEG cache prepared from the four content photos only (no style cache)."""
    from styletransfer.data.prepare import prepare

    root = tmp_path_factory.mktemp("cache") / "content"
    prepare(fast_data / "content", root, short_side=48, workers=0, progress=False)
    return root


CACHE_DATA = ("data=cache", "data.num_workers=0")  # + data.content_cache: content only, decoded on the CPU


@pytest.fixture(scope="module")
def cache_run(fast_data, content_cache, tmp_path_factory):
    """One step of method=fast from the content-only cache (half an epoch: four photos, batches of two)."""
    run = tmp_path_factory.mktemp("cache_run")
    _train(fast_data, run, "waves", steps=1, extra=SLIM, data=(*CACHE_DATA, f"data.content_cache={content_cache}"))
    return run / "checkpoints"


def test_fast_trains_from_a_content_only_cache(content_cache, cache_run):
    """data=cache with only data.content_cache (no style cache): batches hold only content, and method=fast trains
    from them and writes network.pth."""
    from styletransfer.data import CacheDataModule

    module = CacheDataModule(content_cache=str(content_cache), crop_size=32, batch_size=2, num_workers=0,
                             val_pairs=0)
    batch = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert set(batch) == {"content"} and batch["content"].shape == (2, 3, 32, 32)
    assert torch.load(cache_run / "last.ckpt", weights_only=True)["global_step"] == 1
    network = torch.load(cache_run / "network.pth", weights_only=True)
    assert network["styles"] == ["waves"] and network["encoder"]["network"] == "vgg16"


@pytest.mark.slow
def test_a_run_from_a_content_only_cache_resumes_exactly(fast_data, content_cache, cache_run, tmp_path):
    """Resumed from last.ckpt at step 1 (mid-epoch), a run ends at step 3 with an uninterrupted 3-step run's weights
    (the same batches from the cache, across the epoch's end, and the same optimiser state)."""
    data = (*CACHE_DATA, f"data.content_cache={content_cache}")
    _train(fast_data, tmp_path / "whole", "waves", steps=3, extra=SLIM, data=data)
    _train(fast_data, tmp_path / "resumed", "waves", steps=3, data=data,
           extra=(*SLIM, f"ckpt_path={cache_run / 'last.ckpt'}"))
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    whole, resumed = (torch.load(tmp_path / run / "checkpoints" / "network.pth", weights_only=True)
                      for run in ("whole", "resumed"))
    assert all(torch.equal(value, resumed["network"][key]) for key, value in whole["network"].items())


def test_a_pair_method_refuses_a_content_only_cache(content_cache, tmp_path):
    """method=adain (content-style pairs) and validation pairs name data.style_cache and the fix, in one line."""
    from conftest import train_in_process

    from styletransfer.data import CacheDataModule

    with pytest.raises(ConfigError, match="data.val_pairs=2 needs data.style_cache=DIR") as info:
        CacheDataModule(content_cache=str(content_cache), crop_size=32, batch_size=2, val_pairs=2)
    assert "data.val_pairs=0" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="method=adain trains on content-style pairs: give data.style_cache=DIR") \
            as info:
        train_in_process("method=adain", "data=cache", f"data.content_cache={content_cache}", "data.val_pairs=0",
                         "data.batch_size=2", "data.crop_size=32", "encoder.weights=random", "trainer=cpu",
                         "logger=none", "trainer.max_steps=1", run_dir=tmp_path / "run")
    assert "styletransfer-prepare" in str(info.value) and "\n" not in str(info.value)


def test_any_content_size_is_reflection_padded_to_a_multiple_of_4_and_cropped_back():
    """run_network pads each side with the fewest rows and columns that make it a multiple of 4 (none for a
    multiple), by reflection on the bottom and right, and crops the network's output back to the content's size."""
    from styletransfer.methods.fast.styler import run_network

    seen = []

    def network(x, style):  # records what the network is given; its output is its input, shifted by one row
        seen.append(x)
        return x.roll(1, dims=-2)

    for height in range(16, 21):
        for width in (17, 18, 19, 24):
            content = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
            out = run_network(network, content)
            padded = torch.nn.functional.pad(content, (0, (-width) % 4, 0, (-height) % 4), mode="reflect") * 255.0
            assert torch.equal(seen[-1], padded)
            assert torch.equal(out, (padded.roll(1, dims=-2)[..., :height, :width] / 255.0).clamp(0.0, 1.0))


@pytest.mark.slow
@pytest.mark.usefixtures("one_onnx_registry")  # conftest: one registry of torchlib functions
def test_the_examples_network_and_a_slim_network_of_two_styles_export_check_and_run_in_onnxruntime(
        two_style_run, tmp_path, capsys):
    """Any content size keeps its size (reflection-padded to a multiple of 4, cropped back; the examples' network
    alone turns 77 px into 80); the one image graph passes --check at 77 x 53 and the ONNX runtime gives the
    PyTorch path's images within 1e-3. A slim network of several styles (a trained run's network.pth) records its
    layout in the graph and takes the weights over its styles as a second input: blends and --style-name work
    through --runtime onnx as through PyTorch."""
    pytest.importorskip("onnxruntime")
    from styletransfer.apps.onnx_runtime import OnnxModel
    from styletransfer.cli.export import main as export_main
    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.data.images import load_image_tensor, save_image
    from styletransfer.protocol.registry import load_model

    torch.manual_seed(5)
    reference = RefTransformerNet()
    _lively(reference, seed=5)
    with torch.no_grad():  # an output around mid-grey with contrast (a random network's is near 0, then clamped)
        reference.deconv3.conv2d.weight.mul_(300.0)
        reference.deconv3.conv2d.bias.fill_(128.0)
    torch.save(reference.state_dict(), tmp_path / "mosaic.pth")
    model = load_model(tmp_path / "mosaic.pth")
    content = torch.rand(1, 3, 53, 77, generator=torch.Generator().manual_seed(6))
    result = model.stylise(content)
    assert result.shape == content.shape and float(result.std()) > 0.01
    assert export_main([str(tmp_path / "mosaic.pth"), "-o", str(tmp_path / "mosaic.onnx"), "--check"]) == 0
    assert "check passed" in capsys.readouterr().out
    onnx_model = OnnxModel.beside(tmp_path / "mosaic.onnx")
    assert onnx_model.method == "fast" and not onnx_model.capabilities.style_input
    assert float((onnx_model.stylise(content) - result).abs().max()) < 1e-3
    assert export_main([str(two_style_run), "-o", str(tmp_path / "two.onnx"), "--check"]) == 0
    assert "check passed" in capsys.readouterr().out
    two_torch, two_onnx = load_model(two_style_run), OnnxModel.beside(tmp_path / "two.onnx")
    assert two_onnx.own_styles == two_torch.describe()["styles"] and len(two_onnx.own_styles) == 2
    assert two_onnx.describe()["width"] == 0.25 and two_onnx.describe()["residual_blocks"] == 2
    for weights in ([1.0, 0.0], [0.3, 0.7]):
        controls = Controls(weights=weights)
        blend = two_torch.stylise(content, controls=controls)
        assert float(blend.std()) > 0.01
        assert float((two_onnx.stylise(content, controls=controls) - blend).abs().max()) < 1e-3
    with pytest.raises(ConfigError, match="has 2 styles"):
        two_onnx.stylise(content)
    save_image(content[0], tmp_path / "c.png")
    name = two_torch.describe()["styles"][1]
    for runtime, model_file in (("onnx", tmp_path / "two.onnx"), ("torch", two_style_run)):
        assert stylise_main([str(model_file), "--runtime", runtime, "-c", str(tmp_path / "c.png"), "--style-name",
                             name, "-o", str(tmp_path / runtime), "--workers", "0", "--writers", "0"]) == 0
    [onnx_file], [torch_file] = ((tmp_path / d).iterdir() for d in ("onnx", "torch"))
    assert float((load_image_tensor(onnx_file) - load_image_tensor(torch_file)).abs().max()) <= 1 / 255 + 1e-6


def test_styles_are_chosen_by_name(two_style_run, fast_data, tmp_path, capsys):
    """--style-name picks one of the model's own styles (the same image as --weights 0 1), or blends several with
    --weights; an unknown name lists the model's styles."""
    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.data.images import load_image_tensor

    common = [str(two_style_run), "--content", str(fast_data / "content" / "coffee.png"), "--device", "cpu"]
    assert stylise_main([*common, "--style-name", "checks", "-o", str(tmp_path / "named")]) == 0
    assert stylise_main([*common, "--weights", "0", "1", "-o", str(tmp_path / "weighted")]) == 0
    [named], [weighted] = (list((tmp_path / d).iterdir()) for d in ("named", "weighted"))
    assert "_checks" in named.name and torch.equal(load_image_tensor(named), load_image_tensor(weighted))
    assert stylise_main([*common, "--style-name", "checks", "waves", "--weights", "0.5", "0.5", "-o",
                         str(tmp_path / "blend")]) == 0
    capsys.readouterr()
    assert stylise_main([*common, "--style-name", "candy", "-o", str(tmp_path / "bad")]) == 1
    assert "--style-name candy: " in (err := capsys.readouterr().err) and "has the styles waves, checks" in err


def test_another_methods_checkpoint_is_refused_before_training(adain_run, fast_data, tmp_path):
    """Issue 23's bad input: an AdaIN run's last.ckpt given to method=fast as ckpt_path is one line naming the file,
    both models' weights and the fix (it was Lightning's wall of missing and unexpected keys), before anything is
    written to the run's folder."""
    from styletransfer.runtime.errors import CheckpointError

    last, _ = adain_run
    with pytest.raises(CheckpointError) as info:
        _train(fast_data, tmp_path, "waves", steps=2, extra=(f"ckpt_path={last}",))
    message = str(info.value)
    assert "\n" not in message and str(last) in message
    assert "another model (decoder, encoder; FastStyleModule has loss, network)" in message
    assert "leave ckpt_path out" in message
    assert {p.name for p in tmp_path.iterdir()} <= {".run.lock"}  # the run folder's lock, nothing else


@pytest.mark.parametrize("flags", [["--weights", "0.5"], ["--style-name", "waves", "checks", "--weights", "1"],
                                   ["--weights", "0.2", "0.3", "0.5"]])
def test_blend_weights_that_do_not_match_the_styles_are_one_line_and_write_nothing(fast_data, tmp_path, capsys,
                                                                                   flags):
    """A network of two styles given one or three weights (alone or with two --style-name): refused in one line
    naming the counts and the fix, before anything is written (the output folder stays empty)."""
    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.methods.fast.checkpoint import save_network

    save_network(TransformerNet(styles=2, width=0.25, residual_blocks=1), ["waves", "checks"], {},
                 tmp_path / "two.pth")
    out = tmp_path / "out"
    out.mkdir()
    assert stylise_main([str(tmp_path / "two.pth"), "--content", str(fast_data / "content"), "-o", str(out),
                         "--device", "cpu", "--workers", "0", *flags]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    given = len(flags) - flags.index("--weights") - 1
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == f"error: got {given} interpolation weight(s) for 2 style(s): give one per style", err
    assert list(out.iterdir()) == []


def test_bf16_mixed_precision_trains_and_keeps_float32_weights(fast_data, tmp_path):
    """``trainer.precision=bf16-mixed`` (issue 23: bf16 as for AdaIN): two steps run under autocast, the losses stay
    finite and the network file keeps float32 weights. 16 px crops: the CPU's bf16 convolutions of the VGG-16 were
    2 s of the test at 32 px."""
    metrics = _train(fast_data, tmp_path, "waves", steps=2, crop=16, extra=(*SLIM, "trainer.precision=bf16-mixed"))
    assert "loss/total" in metrics and all(torch.isfinite(torch.tensor(float(v))) for v in metrics.values())
    trained = torch.load(tmp_path / "checkpoints" / "network.pth", weights_only=True)
    weights = list(trained["network"].values())
    assert weights and all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights)
