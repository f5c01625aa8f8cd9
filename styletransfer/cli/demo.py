"""``styletransfer-demo``: a web page around one model of any feed-forward method.

    styletransfer-demo MODEL [--device auto|cpu|cuda] [--host 127.0.0.1] [--port 7860] [--share false]

Serves a Gradio page (:mod:`styletransfer.apps.demo`; the ``demo`` extra). The arguments are parsed with the
standard library only, so ``--help`` answers at once, and :func:`main` imports the work (which loads torch and
Gradio) afterwards. A file that is not a model stops the command with one ``error:`` line and exit status 1 before
the server starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from styletransfer.cli.common import LOG_FORMAT, add_model_arguments, command_parser, parse_command, run_command


def build_parser() -> argparse.ArgumentParser:
    parser, add = command_parser(
        "styletransfer-demo",
        "A web page (Gradio) to stylise images with a model file (a run's .ckpt or exported weights, "
        "e.g. AdaIN's decoder.pth, or the AdaIN release's decoder.pth with --encoder-weights vgg_normalised.pth): "
        "content, up to three styles with weights, alpha, colour preservation, an optional mask (each where the "
        "model supports it), and a download button.",
    )
    add_model_arguments(parser)
    add("--device", default="auto", help="auto (default: the GPU when there is one), cpu, cuda, cuda:1 ...")
    add(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    add("--port", type=int, default=7860, help="port to serve on (default 7860)")
    add(
        "--share",
        default="false",
        metavar="true|false",
        help="also serve through a public gradio.live link (default false; needs internet access)",
    )
    add(
        "--max-long-side",
        type=int,
        default=1024,
        help="reduce larger contents to this longer side (default 1024; 0 keeps every size)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-demo``: serves until interrupted; returns 1 with a one-line error on bad input."""
    return run_command(parse_command(build_parser(), argv, LOG_FORMAT), "styletransfer.apps.demo:run_demo")


if __name__ == "__main__":
    sys.exit(main())
