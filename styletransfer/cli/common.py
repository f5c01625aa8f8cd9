"""What the commands share: the model arguments and the way an error ends a command. Standard library only, so
importing it keeps ``--help`` instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from styletransfer.runtime.errors import StyleTransferError

#: The model files every command takes.
CHECKPOINT_HELP = (
    "a model file: a run's checkpoints/last.ckpt or exported weights (AdaIN: checkpoints/decoder.pth), "
    "or the AdaIN release's decoder.pth"
)


#: How the commands that load a model log: INFO lines naming their logger.
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def command_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, Callable[..., argparse.Action]]:
    """A command's parser and its ``add_argument``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    return parser, parser.add_argument


def parse_command(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, log_format: str | None = None
) -> argparse.Namespace:
    """The command's arguments from ``argv`` (``sys.argv[1:]`` when None); with ``log_format``, INFO logging in
    that format is set up first."""
    if log_format is not None:
        logging.basicConfig(level=logging.INFO, format=log_format)
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--encoder-weights`` and ``--encoder-seed``: the encoder a decoder file is used with."""
    parser.add_argument(
        "--encoder-weights",
        default=None,
        help="encoder for decoder files: imagenet, random or a path "
        "(the release needs vgg_normalised.pth); default: the one recorded in the file",
    )
    parser.add_argument("--encoder-seed", type=int, default=0, help="seed of a random encoder (default 0)")


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_help: str = CHECKPOINT_HELP) -> None:
    """The model positional (``checkpoint``) and the encoder arguments."""
    parser.add_argument("checkpoint", type=Path, help=checkpoint_help)
    add_encoder_arguments(parser)


def _function(work: str | Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], object]:
    """``work``, or the function its ``"module:function"`` names, imported now."""
    if isinstance(work, str):
        module, _, name = work.partition(":")
        return getattr(importlib.import_module(module), name)
    return work


def run_command(
    args: argparse.Namespace,
    work: str | Callable[[argparse.Namespace], object],
    interrupted: Callable[[], str] = lambda: "Ctrl-C",
) -> int:
    """Run ``work(args)`` and return the command's exit status: ``work``'s own when it returns an int, else 0; a
    project error (a bad file or setting) ends it with one ``error:`` line and status 1; a Ctrl-C that ``work`` does
    not handle itself (while torch or a model loads) with one ``interrupted:`` line (``interrupted()`` says what is
    kept) and the shell's 130. ``work`` is a function or a ``"module:function"`` imported here, so that ``--help``
    and flag errors never load what it needs (torch) and this covers the import too."""
    try:
        result = _function(work)(args)
        return result if isinstance(result, int) and not isinstance(result, bool) else 0
    except StyleTransferError as exc:  # an interrupt (RunInterrupted) carries the shell's 128 + signal number
        code = getattr(exc, "exit_code", 1)
        print(f"{'interrupted' if code > 128 else 'error'}: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted()}", file=sys.stderr)
        return 130
