"""``styletransfer-weights``: list, fetch and locate the weight files the project knows.

    styletransfer-weights list              # each known file: what uses it, where it goes, present, verified, size
    styletransfer-weights fetch vgg19       # download (resumable), verify the SHA-256, install where the project looks
    styletransfer-weights path adain-vgg    # where a file goes (to pass as --encoder-weights)

This module imports the standard library and the project's runtime layer only (no torch), so ``--help`` and a
mistyped name answer at once; torch is imported when a path into torch.hub's cache is needed. The registry of known
files is ``styletransfer.runtime.weight_files``, the download itself ``styletransfer.runtime.download``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from styletransfer.cli.common import parse_command, run_command
from styletransfer.runtime import weight_files
from styletransfer.runtime.download import describe_sha256, fetch, part_path
from styletransfer.runtime.errors import ChecksumMismatch, DownloadError
from styletransfer.runtime.weight_files import (
    BASE_URL_ENV,
    WeightFile,
    known,
    read_record,
    record_path,
    verification,
    write_record,
)


def _size(path: Path) -> str:
    """A file's size for the table (MB with one decimal), or "-" when it is absent."""
    return f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _list(args: argparse.Namespace) -> int:
    """Print the known files and their checksums' sources; exit 1 when an installed file fails its check."""
    rows, bad = [], []
    for weight in weight_files.KNOWN:
        dest = weight.destination()
        state = verification(weight, dest)
        if state.startswith("MISMATCH"):
            bad.append(f"{weight.name} ({dest}): {state}")
        rows.append(
            [
                weight.name,
                weight.used_by,
                str(dest),
                "yes" if dest.is_file() else "no",
                "-" if state == "absent" else state.split(":")[0],
                _size(dest),
            ]
        )
    print(_table(["name", "used by", "path", "present", "verified", "size"], rows))
    print()
    print(
        _table(
            ["name", "SHA-256 checked", "where the value comes from"],
            [[w.name, w.sha256 or "(recorded at first download)", w.source] for w in weight_files.KNOWN],
        )
    )
    for line in bad:
        print(f"error: {line}. Fetch it again: styletransfer-weights fetch NAME", file=sys.stderr)
    return 1 if bad else 0


def holds_expected(weight: WeightFile, url: str, dest: Path) -> Callable[[Path], None]:
    """The check a first-use download must pass before it is installed and its checksum recorded: a weights-only
    load (nothing in the file runs) holding the tensors ``weight.holds`` names, with their shapes."""

    def check(path: Path) -> None:
        from styletransfer.nn.weights import safe_load  # torch loads here, only to check a download

        refusal = f"{url} did not deliver {weight.name}"
        done = f"Nothing was installed at {dest} and no checksum was recorded"
        try:
            state = safe_load(path, f"download of {weight.name}", DownloadError)
        except DownloadError as exc:
            raise DownloadError(f"{refusal}: {str(exc).splitlines()[0]}. {done}") from None
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
        for key, shape in weight.holds:
            found = state.get(key) if isinstance(state, Mapping) else None
            got = tuple(found.shape) if found is not None and hasattr(found, "shape") else None
            if got != shape:
                raise DownloadError(
                    f"{refusal}: its {key!r} is {got or 'missing'}, expected a tensor of shape {shape}. {done}"
                )

    return check


def _fetch(args: argparse.Namespace) -> int:
    """Download, verify and install one file (nothing to do when it is already there and verified)."""
    weight: WeightFile = known(args.name)
    dest = args.dest.expanduser() if args.dest else weight.destination()
    url = args.url or weight.download_url()
    state = verification(weight, dest)
    if state.startswith("yes"):
        print(f"{weight.name}: {dest} is already there and verified ({state})")
        return 0
    recorded = read_record(dest) if weight.sha256 is None else None
    print(f"fetching {weight.name} from {url}\n  into {dest}", file=sys.stderr)
    try:
        check = holds_expected(weight, url, dest) if weight.sha256 is None and recorded is None else None
        digest = fetch(url, dest, weight.sha256 or recorded, progress=not args.quiet, check=check)
    except ChecksumMismatch as exc:
        if recorded is None:
            raise
        raise ChecksumMismatch(
            f"{exc}. The expected value was recorded at the first download in "
            f"{record_path(dest)}: delete that file to accept the new one"
        ) from None
    if weight.sha256 is None:
        write_record(dest, digest)
        note = f"no published checksum: its SHA-256 {digest} is recorded in {record_path(dest)}"
    else:
        note = f"SHA-256 {digest} matches {describe_sha256(weight.sha256)}"
    print(f"installed {dest} ({note})")
    return 0


def _path(args: argparse.Namespace) -> int:
    print(known(args.name).destination())
    return 0


def build_parser() -> argparse.ArgumentParser:
    names = [w.name for w in weight_files.KNOWN]
    parser = argparse.ArgumentParser(
        prog="styletransfer-weights",
        description="List, download and verify the weight files the project uses (torchvision's VGG-19, the AdaIN "
        "release's vgg_normalised.pth and decoder.pth, LPIPS' AlexNet, ArtFID's Inception). Files go into "
        f"torch.hub's cache ($TORCH_HOME/hub/checkpoints). ${BASE_URL_ENV}=URL fetches from a mirror "
        "(URL/<file name>).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,fetch,path}")
    listing = commands.add_parser("list", help="each known file: what uses it, where it goes, present, verified")
    listing.set_defaults(run=_list)
    get = commands.add_parser("fetch", help="download a file (resuming a .part), verify its SHA-256, install it")
    get.add_argument("name", choices=names, help="which file")
    get.add_argument("--url", help="download from this URL instead (the checksum is still checked)")
    get.add_argument("--dest", type=Path, help="install here instead of where the project looks")
    get.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    get.set_defaults(run=_fetch)
    where = commands.add_parser("path", help="print where a file goes (the path the project looks at)")
    where.add_argument("name", choices=names, help="which file")
    where.set_defaults(run=_path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-weights``; returns 0, or 1 with a one-line error (never a traceback)."""
    args = parse_command(build_parser(), argv)

    def kept() -> str:
        dest = (args.dest or known(args.name).destination()) if args.command == "fetch" else None
        return f"{part_path(dest)} is kept, run the same command again to resume" if dest else "Ctrl-C"

    try:
        return run_command(args, args.run, interrupted=kept)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other Unix tools do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit; this keeps it quiet)
        return 1


if __name__ == "__main__":
    sys.exit(main())
