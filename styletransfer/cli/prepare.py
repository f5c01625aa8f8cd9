"""``styletransfer-prepare``: a shard cache of a folder of images, each resized once, for fast training.

    styletransfer-prepare SRC DST --short-side 512 [--workers N] [--format jpeg|raw] [--quality 95] [--rebuild]

What it writes and how a rerun resumes: :mod:`styletransfer.data.prepare`. The arguments are parsed with the
standard library only, so ``--help`` answers at once; :func:`main` imports the work afterwards.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from styletransfer.apps.interrupts import Terminated, signal_of, sigterm_raises
from styletransfer.cli.common import command_parser, parse_command, run_command
from styletransfer.runtime.choices import (
    CACHE_FORMATS,
    PREPARE_FORMAT,
    PREPARE_QUALITY,
    PREPARE_SHARD_MB,
    PREPARE_SHORT_SIDE,
)


def build_parser() -> argparse.ArgumentParser:
    parser, add = command_parser(
        "styletransfer-prepare",
        "Resize every image of SRC (searched recursively) once into memory-mapped shards at DST, for "
        "`python train.py data=cache`. A rerun (or a run after a crash or Ctrl-C) keeps the finished shards and "
        "processes only new or changed images; unreadable files are skipped and listed.",
    )
    add("src", type=Path, help="folder of images (searched recursively)")
    add("dst", type=Path, help="cache folder to make or update")
    add(
        "--short-side",
        type=int,
        default=PREPARE_SHORT_SIDE,
        help=f"shorter side after resizing (data.short_side; default {PREPARE_SHORT_SIDE})",
    )
    add(
        "--format",
        choices=CACHE_FORMATS,
        default=PREPARE_FORMAT,
        help="jpeg (compact, GPU-decodable; default) or raw (uint8 pixels, no decoding)",
    )
    add("--quality", type=int, default=PREPARE_QUALITY, help=f"JPEG quality (default {PREPARE_QUALITY})")
    add("--workers", type=int, default=None, help="processes (default: the usable CPU cores)")
    add("--shard-mb", type=float, default=PREPARE_SHARD_MB, help=f"shard size in MiB (default {PREPARE_SHARD_MB:g})")
    add("--rebuild", action="store_true", help="delete the cache at DST and make it again")
    add("--quiet", action="store_true", help="no progress bar")
    return parser


def report(args: argparse.Namespace) -> None:
    """Prepare, then print a summary, every unreadable file and the command to train on the cache."""
    from styletransfer.data.cache import MANIFEST_NAME, prepare_command, read_manifest
    from styletransfer.data.prepare import prepare

    summary = prepare(
        args.src,
        args.dst,
        args.short_side,
        args.format,
        args.quality,
        args.workers,
        args.rebuild,
        args.shard_mb,
        progress=not args.quiet,
    )
    rate = summary.processed / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"{args.dst}: {summary.images} images ({summary.processed} processed at {rate:.1f} images/s, "
        f"{summary.kept} unchanged, {summary.removed} gone from the source), {summary.shards_written} new shard(s) "
        f"in {summary.seconds:.1f} s"
    )
    if summary.skipped:
        print(f"{len(summary.skipped)} unreadable file(s) skipped (listed in {Path(args.dst) / MANIFEST_NAME}):")
        for source, cause in summary.skipped.items():
            print(f"  {source}: {cause}")
    manifest = read_manifest(args.dst, "DST")
    print(
        f"train with: python train.py data=cache data.cache=<folder holding content/ and style/>; rebuild with: "
        f"{prepare_command(manifest, args.dst)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-prepare``; returns 0, or 1 with a one-line error on bad input."""
    args = parse_command(build_parser(), argv)

    def kept(signum: int = signal.SIGINT) -> str:  # the finished shards are on disk, named by the manifest
        return (
            f"{signal.Signals(signum).name}: the shards finished so far are kept in {args.dst}; run the same command "
            "again to continue"
        )

    try:
        with sigterm_raises():
            return run_command(args, report, interrupted=kept)
    except Terminated as exc:
        signum = signal_of(exc)
        print(f"interrupted: {kept(signum)}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
