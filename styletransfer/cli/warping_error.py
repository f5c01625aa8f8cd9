"""``styletransfer-warping-error``: the temporal stability of a stylised video (its warping error).

    styletransfer-warping-error clip.mp4 out/clip_stylised_s.mp4 [--raft-weights raft_large.pth] [--json r.json]

What it measures: :mod:`styletransfer.eval.temporal`. The arguments are parsed with the standard library only, so
``--help`` answers at once; :func:`main` imports the work afterwards.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from styletransfer.cli.common import command_parser, parse_command, run_command


def build_parser() -> argparse.ArgumentParser:
    parser, add = command_parser(
        "styletransfer-warping-error",
        "The warping error of a stylised video: consecutive stylised frames compared along the content's optical "
        "flow, where it is reliable.",
    )
    add("original", type=Path, help="the content clip (or folder of frames, with --fps)")
    add("stylised", type=Path, help="its stylised video")
    add("--fps", type=float, default=None, help="ORIGINAL is a folder of frames at this rate")
    add(
        "--raft-weights",
        type=Path,
        default=None,
        help="a torchvision RAFT state_dict file: RAFT flow instead of Farneback",
    )
    add("--raft-model", choices=("large", "small"), default="large", help="RAFT variant (large)")
    add("--device", default="cpu", help="device for RAFT (default cpu)")
    add("--json", type=Path, default=None, help="also write the report to this JSON file")
    return parser


def report(args: argparse.Namespace) -> None:
    """Measure and print the warping error (and write it to ``--json``)."""
    from styletransfer.data.flow import farneback
    from styletransfer.eval.temporal import RaftFlow, video_warping_error
    from styletransfer.runtime.files import write_json_atomic

    flow, name = farneback, "farneback"
    if args.raft_weights is not None:
        flow, name = RaftFlow(args.raft_weights, args.raft_model, args.device), f"raft-{args.raft_model}"
    result = video_warping_error(args.original, args.stylised, args.fps, flow, name)
    print(result.line(str(args.stylised)))
    if args.json is not None:
        write_json_atomic(args.json, asdict(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-warping-error``; returns 0, or 1 with a one-line error on bad input."""
    return run_command(parse_command(build_parser(), argv), report)


if __name__ == "__main__":
    sys.exit(main())
