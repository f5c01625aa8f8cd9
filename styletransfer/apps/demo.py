"""The web demo (``styletransfer-demo``): a Gradio page around one loaded model of any feed-forward method
(:class:`~styletransfer.protocol.model.StyleModel`).

The page takes a content image, up to three style images with relative weights (normalised to sum 1), alpha,
colour preservation and an optional mask, and returns the stylised image (the content's size) as a PNG with a
download button. The mask is one greyscale image of the content's aspect ratio: white is the first style's region;
black is the second style's with two styles, or the unchanged content with one. Every input a user can get wrong
comes back as a message in the page (``gr.Error``), never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from styletransfer.apps.stylise import encoder_arg
from styletransfer.data.images import load_rgb, pil_to_tensor, resize_to_side, tensor_to_pil
from styletransfer.protocol.controls import Capabilities, Controls, check_controls, check_size, refuse_unsupported
from styletransfer.protocol.model import StyleModel
from styletransfer.protocol.registry import load_model
from styletransfer.runtime.devices import device_name, resolve_device
from styletransfer.runtime.errors import ConfigError, ImageLoadError, MaskRegionError, StyleTransferError

try:
    import gradio as gr
except ModuleNotFoundError as exc:  # the command ends with this one line, naming the extra
    raise ConfigError(f'the demo needs the demo extra ({exc}): pip install -e ".[demo]"') from None

log = logging.getLogger(__name__)

#: Style slots on the page (the first is required).
STYLE_SLOTS = 3
#: Styles' shorter side before encoding, as ``styletransfer-stylise --style-short-side`` (its default).
STYLE_SIDE = 512
#: A mask's aspect ratio may differ from the content's by this fraction (rounding of a resized copy).
MASK_ASPECT_TOLERANCE = 0.02


def _read(path: str, what: str) -> Image.Image:
    """An uploaded file as RGB, or a ConfigError naming the input (``what``) and the file."""
    try:
        return load_rgb(path)
    except ImageLoadError as exc:
        raise ConfigError(f"{what}: cannot read image {Path(exc.path).name} ({exc.cause})") from None


#: How the page names each control in a refusal.
PAGE_CONTROLS = {
    "styles": "style images",
    "weights": "several styles",
    "alpha": "alpha below 1",
    "masks": "a mask",
    "preserve_colour": "colour preservation",
    "output_size": "another output size",
}


def _content(path: str | None, max_long_side: int, min_side: int) -> Image.Image:
    """The content image, its longer side reduced to ``max_long_side`` (0 keeps it) with a warning in the page."""
    if not path:
        raise ConfigError("no content image: upload one first")
    img = _read(path, "content image")
    check_size(img.width, img.height, "the content image", min_side, "upload a larger one")
    if max_long_side and max(img.size) > max_long_side:
        gr.Warning(f"the content image ({img.width}x{img.height}) was reduced to {max_long_side} px on its longer side")
        img = resize_to_side(img, max_long_side, long_side=True)
    return img


def _styles(slots: Sequence[tuple[str | None, float | None]], needed: bool = True) -> tuple[list[Tensor], list[float]]:
    """The uploaded styles (shorter side ``STYLE_SIDE``) and their relative weights normalised to sum 1 (none for a
    model without style input: ``needed`` False)."""
    styles, weights = [], []
    for k, (path, weight) in enumerate(slots, start=1):
        if not path:
            continue
        weight = 1.0 if weight is None else float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"style {k}: the weight must be a number >= 0, got {weight}")
        styles.append(pil_to_tensor(resize_to_side(_read(path, f"style image {k}"), STYLE_SIDE)))
        weights.append(weight)
    if not styles:
        if not needed:
            return [], []
        raise ConfigError("no style image: upload at least one")
    if sum(weights) <= 0:
        raise ConfigError("the style weights are all 0: give at least one style a weight above 0")
    return styles, [w / sum(weights) for w in weights]


def _masks(path: str | None, content: Image.Image, n_styles: int) -> list[Tensor] | None:
    """The mask as one region per style ([white] for one style, [white, black] for two), or None without one."""
    if not path:
        return None
    if n_styles > 2:
        raise ConfigError(f"a mask splits the image between one or two styles; {n_styles} styles are uploaded")
    mask = _read(path, "mask")
    (mw, mh), (cw, ch) = mask.size, content.size
    if abs(mw * ch - mh * cw) > MASK_ASPECT_TOLERANCE * mw * ch:
        raise ConfigError(
            f"the mask is {mw}x{mh} px but the content is {cw}x{ch}: give a mask of the content's size "
            "(or a resized copy of it, same aspect ratio)"
        )
    white = pil_to_tensor(mask.convert("L").convert("RGB"))[0]
    return [white] if n_styles == 1 else [white, 1.0 - white]


def uploaded(value: Any) -> str | None:
    """An image input's file path: the page sends its upload unprocessed (``preprocess=False``: Gradio would decode
    it first and answer a file it cannot read with a generic error), as a file record or, from Python, a path."""
    if isinstance(value, Mapping):
        value = value.get("path")
    return str(value) if value else None


class DemoPredictor:
    """What the page's button runs: reads the uploads, checks them and stylises with the one loaded model."""

    def __init__(self, styliser: StyleModel, max_long_side: int = 1024) -> None:
        self.styliser = styliser
        self.max_long_side = max_long_side

    def predict(self, content: str | None, *inputs) -> Image.Image:
        """``inputs``: STYLE_SLOTS (style path, weight) pairs, then alpha, preserve_colour, the mask path and,
        optionally, the name of one of the model's own styles (a network trained for several).

        Returns the stylised image; a bad input raises ``gr.Error`` with a message for the page.
        """
        slots = [(uploaded(inputs[2 * k]), inputs[2 * k + 1]) for k in range(STYLE_SLOTS)]
        alpha, preserve_colour, mask, *name = inputs[2 * STYLE_SLOTS :]
        try:
            if name and name[0]:
                return self._own_style(uploaded(content), str(name[0]))
            return self._stylise(uploaded(content), slots, alpha, bool(preserve_colour), uploaded(mask))
        except StyleTransferError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc

    def _own_style(self, content_path: str | None, name: str) -> Image.Image:
        """The content in one of the model's own styles, chosen by name (as ``--style-name``)."""
        names = own_styles(self.styliser)
        if name not in names:
            raise ConfigError(f"style {name!r}: this model has the styles {', '.join(names) or 'none by name'}")
        content = _content(content_path, self.max_long_side, self.styliser.capabilities.min_side)
        weights = [1.0 if own == name else 0.0 for own in names]
        return tensor_to_pil(self.styliser.stylise(pil_to_tensor(content), [], Controls(weights=weights)))

    def _stylise(
        self,
        content_path: str | None,
        slots: Sequence[tuple[str | None, float | None]],
        alpha: float | None,
        preserve_colour: bool,
        mask_path: str | None,
    ) -> Image.Image:
        if alpha is None or not math.isfinite(float(alpha)):
            raise ConfigError(f"alpha must be a number in [0, 1], got {alpha}")
        caps = self.styliser.capabilities
        content = _content(content_path, self.max_long_side, caps.min_side)
        styles, weights = _styles(slots, caps.style_input)
        masks = _masks(mask_path, content, len(styles))
        asked = Controls(weights=weights, alpha=float(alpha), preserve_colour=preserve_colour, masks=masks)
        refuse_unsupported(caps, "this model", asked.asked(styles), PAGE_CONTROLS)
        mixed = check_controls(len(styles), None if masks else weights, float(alpha), masks) if styles else None
        try:
            out = self.styliser.stylise(pil_to_tensor(content), styles, dataclasses.replace(asked, weights=mixed))
        except MaskRegionError as exc:  # the page's one mask holds style 1's region in white, style 2's in black
            region = "white (style 1)" if exc.mask == 0 else "black (style 2)"
            raise ConfigError(f"the mask's {region} part: {exc.reason}") from None
        return tensor_to_pil(out)


def own_styles(styliser: StyleModel) -> list[str]:
    """The names of a network's own styles when it was trained for several (one to choose on the page), else []."""
    names = list(styliser.describe().get("styles") or [])
    return names if not styliser.capabilities.style_input and len(names) > 1 else []


def _header(styliser: StyleModel) -> str:
    """The page's title and what is loaded (method, file, device), with the model's warning if it has one."""
    if styliser.capabilities.style_input:
        ask = f"Upload a content image and one to {STYLE_SLOTS} styles"
    elif own_styles(styliser):
        ask = "Upload a content image and choose one of the model's own styles"
    else:
        ask = "Upload a content image (the model stylises in the one style it was trained for)"
    text = (
        f"# Style transfer ({styliser.method})\n\nModel `{Path(styliser.source).name}` ({styliser.kind}) on "
        f"{device_name(styliser.device)}. {ask}, then press **Stylise**."
    )
    warning = styliser.warning()
    if warning:
        text += f"\n\n**Note:** {warning}."
    return text


def _upload(label: str, elem_id: str, height: int) -> gr.Image:
    """An image input handing over the uploaded file's path (read by ``load_rgb``, so errors name the input)."""
    return gr.Image(
        type="filepath", image_mode=None, label=label, sources=["upload", "clipboard"], height=height, elem_id=elem_id
    )


def _styles_and_mask(caps: Capabilities) -> tuple[list[gr.components.Component], gr.Image]:
    """STYLE_SLOTS (image, relative weight) pairs and the mask, side by side; shown only where the model takes them
    (the click still sends them, empty)."""
    styles: list[gr.components.Component] = []
    with gr.Row(visible=caps.style_input):
        for k in range(1, STYLE_SLOTS + 1):
            with gr.Column(min_width=140):
                styles.append(_upload(f"style {k}" + (" (optional)" if k > 1 else ""), f"style{k}", 140))
                styles.append(gr.Number(value=1.0, minimum=0, label=f"weight {k} (relative)", elem_id=f"weight{k}"))
        with gr.Column(min_width=140, visible=caps.masks):
            mask = _upload("mask (optional)", "mask", 140)
            gr.Markdown(
                "White: style 1. Black: style 2, or the unchanged content with one style. Weights are then unused."
            )
    return styles, mask


def build_app(styliser: StyleModel, max_long_side: int = 1024) -> gr.Blocks:
    """The demo page around ``styliser`` (loaded once, shared by every request); launch it with ``.launch()``."""
    predictor = DemoPredictor(styliser, max_long_side)
    with gr.Blocks(title="styletransfer demo", analytics_enabled=False) as app:
        gr.Markdown(_header(styliser))
        with gr.Row():
            content = _upload("content", "content", 260)
            output = gr.Image(
                type="pil",
                format="png",
                label="result (PNG)",
                interactive=False,
                height=260,
                buttons=["download"],
                elem_id="output",
            )
        caps, names = styliser.capabilities, own_styles(styliser)
        styles, mask = _styles_and_mask(caps)
        with gr.Row(equal_height=True):
            alpha = gr.Slider(
                0.0,
                1.0,
                value=1.0,
                step=0.05,
                label="alpha (0: the content, 1: full style)",
                elem_id="alpha",
                scale=2,
                visible=caps.alpha,
            )
            colour = gr.Checkbox(
                label="preserve the content's colours", elem_id="colour", scale=1, visible=caps.preserve_colour
            )
            style_name = gr.Dropdown(
                names, value=names[0] if names else None, label="style", elem_id="style_name", visible=bool(names)
            )
            button = gr.Button("Stylise", variant="primary", elem_id="run", scale=1)
        # Unprocessed inputs: each upload is read by load_rgb, so a file that is not an image is named in the page.
        inputs = [content, *styles, alpha, colour, mask, style_name]
        button.click(predictor.predict, inputs, output, api_name="stylise", preprocess=False)
    return app


def parse_share(value: str) -> bool:
    """``--share true|false`` (also yes/no, 1/0)."""
    lowered = str(value).lower()
    if lowered not in ("true", "false", "yes", "no", "1", "0"):
        raise ConfigError(f"--share must be true or false, got {value!r}")
    return lowered in ("true", "yes", "1")


def check_free(host: str, port: int) -> None:
    """A ConfigError naming ``host:port`` when it cannot be served on (taken, or not this machine's address)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot serve on {host}:{port} ({exc.strerror or exc}): choose another --port or --host"
        ) from None


def run_demo(args: argparse.Namespace) -> None:
    """Load the model once, then serve the page until interrupted (errors before the server starts are raised)."""
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1-65535, got {args.port}")
    if args.max_long_side < 0:
        raise ConfigError(f"--max-long-side must be >= 0 (0 keeps the content's size), got {args.max_long_side}")
    share = parse_share(args.share)
    check_free(args.host, args.port)  # before the model loads: a busy port answers at once
    device = resolve_device(args.device, "--device")
    styliser = load_model(args.checkpoint, encoder_arg(args), device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # every upload may have a new size: no per-shape kernel search
    log.info("loaded %s on %s", args.checkpoint, device_name(device))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one line each
    app = build_app(styliser, args.max_long_side).queue(default_concurrency_limit=1)  # one stylisation at a time
    try:
        app.launch(server_name=args.host, server_port=args.port, share=share, show_error=True, ssr_mode=False)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise ConfigError(f"cannot serve on {args.host}:{args.port} ({exc}): choose another --port or --host") from None
