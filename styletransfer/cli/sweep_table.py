"""``styletransfer-sweep-table SWEEP_DIR``: (re)write the trials table of a sweep that is running or was stopped
(``trials.csv``, ``trials.md``, ``objective_vs_params.png``; see :mod:`styletransfer.sweeps.table`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from styletransfer.cli.common import parse_command, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="styletransfer-sweep-table", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (holds multirun.yaml and the trials)")
    parser.add_argument(
        "--direction",
        choices=("minimize", "maximize"),
        default=None,
        help="default: the objective's direction recorded in multirun.yaml",
    )
    return parser


def write_table(args: argparse.Namespace) -> int:
    """Write the table; 1 when the folder holds no trial."""
    from omegaconf import DictConfig, OmegaConf

    from styletransfer.sweeps.direction import direction_of
    from styletransfer.sweeps.table import declared_keys, write_sweep_report

    config_path = args.sweep_dir / "multirun.yaml"
    config = OmegaConf.load(config_path) if config_path.is_file() else OmegaConf.create()
    if not isinstance(config, DictConfig):
        config = OmegaConf.create()  # a multirun.yaml that is not a mapping holds no swept keys
    trials = write_sweep_report(args.sweep_dir, declared_keys(config), args.direction or direction_of(config))
    return 0 if trials else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-sweep-table``."""
    return run_command(parse_command(build_parser(), argv, "%(message)s"), write_table)


if __name__ == "__main__":
    sys.exit(main())
