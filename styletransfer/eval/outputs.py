"""Results made by any other tool as one more model in the table: ``evaluate.py outputs=DIR``.

Each folder's files are paired to the benchmark's (content, style) pairs, by name or by an ``outputs.csv``:

* by name (files directly in the folder): ``<content stem>_stylised_<style stem>.<ext>`` (what
  ``styletransfer-stylise`` writes with its default controls) or ``<content stem>__<style stem>.<ext>``;
* by ``outputs.csv`` in the folder, columns ``content,style,result``: the content and style as file names or stems
  of the benchmark's images, the result as a path relative to the folder (or absolute).

Every pair must have exactly one readable result (checked, and every file decoded once, before anything is scored);
image files that match no pair are named in a warning and recorded. A result of another size than its benchmark
content (a tool that ran on the full-size images while the benchmark resizes them) is resized to the content's size
(bilinear, antialiased) and the report says how many were; one whose aspect ratio differs by more than
``ASPECT_TOLERANCE`` is refused (a crop or another image: its metrics would not mean anything).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from styletransfer.apps.stylise import stylised_stem
from styletransfer.data.images import IMAGE_EXTENSIONS, load_image_tensor
from styletransfer.eval.benchmark import Benchmark
from styletransfer.protocol.candidate import Candidate
from styletransfer.runtime.errors import ConfigError, ImageLoadError

log = logging.getLogger(__name__)

#: The pairing file an outputs folder may hold, and its columns.
PAIRING_CSV = "outputs.csv"
CSV_FIELDS = ("content", "style", "result")
#: Largest relative difference of aspect ratio (width / height) between a result and its content that is resized.
ASPECT_TOLERANCE = 0.02
#: How many names an error or warning lists before saying "and N more".
LISTED = 3


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return f"{shown} and {len(names) - LISTED} more" if len(names) > LISTED else shown


@dataclass
class OutputsFolder:
    """A folder of results paired to a benchmark: ``files[(ci, si)]`` is the result of pair (ci, si)."""

    folder: Path
    pairing: str
    files: dict[tuple[int, int], Path]
    extra: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def info(self) -> dict[str, object]:
        """What the report records about the folder (``method: external``: made outside this project, not timed)."""
        notes = []
        if self.resized:
            notes.append(
                f"{len(self.resized)} of {len(self.files)} results resized to their content's size "
                f"(bilinear, antialiased): {_listing(self.resized)}"
            )
        if self.extra:
            notes.append(f"{len(self.extra)} file(s) matching no pair ignored: {_listing(self.extra)}")
        return {
            "method": "external",
            "kind": "outputs folder",
            "path": str(self.folder),
            "external": True,
            "pairing": self.pairing,
            "n_results": len(self.files),
            "resized": list(self.resized),
            "extra_files": list(self.extra),
            "notes": notes,
        }


def _names_by_rule(bench: Benchmark) -> dict[str, tuple[int, int]]:
    """Every stem the naming rule accepts for each pair."""
    names: dict[str, tuple[int, int]] = {}
    for ci, si in bench.pairs:
        content, style = bench.contents[ci][0].stem, bench.styles[si][0].stem
        for name in (stylised_stem(content, [style]), f"{content}__{style}"):
            if names.setdefault(name, (ci, si)) != (ci, si):
                raise ConfigError(
                    f"benchmark images with the same stem make result name {name!r} ambiguous: pair them with "
                    f"an {PAIRING_CSV} (columns {','.join(CSV_FIELDS)}) naming the files"
                )
    return names


def _pair_by_name(folder: Path, bench: Benchmark) -> tuple[dict[tuple[int, int], Path], list[str]]:
    names = _names_by_rule(bench)
    files: dict[tuple[int, int], Path] = {}
    extra = []
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for path in images:
        pair = names.get(path.stem)
        if pair is None:
            extra.append(path.name)
        elif pair in files:
            raise ConfigError(
                f"outputs={folder}: {files[pair].name} and {path.name} are both results of "
                f"{bench.contents[pair[0]][0].name} x {bench.styles[pair[1]][0].name}: keep one"
            )
        else:
            files[pair] = path
    return files, extra


def _lookup(paths: Sequence[Path], value: str) -> int | None:
    for index, path in enumerate(paths):
        if value in (path.name, path.stem):
            return index
    return None


def _pair_by_csv(folder: Path, bench: Benchmark) -> tuple[dict[tuple[int, int], Path], list[str]]:
    table = folder / PAIRING_CSV
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in CSV_FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    f"{table} has no column {', '.join(missing)}: its header must be {','.join(CSV_FIELDS)}"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"{table} could not be read ({exc}): write it as UTF-8 CSV, header content,style,result"
        ) from None
    contents = [p for p, _ in bench.contents]
    styles = [p for p, _ in bench.styles]
    files: dict[tuple[int, int], Path] = {}
    extra = []
    for line, row in enumerate(rows, start=2):
        ci, si = _lookup(contents, row["content"] or ""), _lookup(styles, row["style"] or "")
        result = Path(row["result"] or "")
        result = result if result.is_absolute() else folder / result
        if ci is None or si is None:
            extra.append(f"{PAIRING_CSV} line {line} ({row['content']}, {row['style']})")
            continue
        if (ci, si) in files:
            raise ConfigError(f"{table} line {line}: a second result for {row['content']} x {row['style']}: keep one")
        if not row["result"] or not result.is_file():
            raise ConfigError(
                f"{table} line {line}: result {result} does not exist: fix the path (relative to {folder})"
            )
        files[(ci, si)] = result
    return files, extra


def _check_result(path: Path, content: Tensor, folder: Path) -> bool:
    """Decode ``path``; True when it must be resized to the content's size. Refuses unreadable files and results
    whose aspect ratio is not the content's."""
    try:
        image = load_image_tensor(path)
    except ImageLoadError as exc:
        raise ConfigError(f"outputs={folder}: {exc}: replace or remove the file") from None
    (h, w), (ch, cw) = image.shape[-2:], content.shape[-2:]
    if (h, w) == (ch, cw):
        return False
    if abs((w / h) / (cw / ch) - 1) > ASPECT_TOLERANCE:
        raise ConfigError(
            f"outputs={folder}: {path.name} is {w}x{h}, its content is {cw}x{ch} (another aspect ratio: a crop or "
            "another image): give results of the whole content image"
        )
    return True


def pair_outputs(folder: str | Path, bench: Benchmark) -> OutputsFolder:
    """Pair ``folder``'s results to every pair of ``bench`` (see the module's docstring); every result is decoded
    here, so a bad file is refused before any model runs and nothing is written."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"outputs={folder} is not a folder: give a folder of result images")
    by_csv = (folder / PAIRING_CSV).is_file()
    files, extra = _pair_by_csv(folder, bench) if by_csv else _pair_by_name(folder, bench)
    missing = [f"{bench.contents[c][0].stem}__{bench.styles[s][0].stem}" for c, s in bench.pairs if (c, s) not in files]
    if missing:
        how = (
            f"add them to {PAIRING_CSV}"
            if by_csv
            else "name each <content stem>_stylised_<style stem>.<ext> or <content stem>__<style stem>.<ext>, "
            f"or pair them in {PAIRING_CSV} (columns {','.join(CSV_FIELDS)})"
        )
        raise ConfigError(
            f"outputs={folder}: no result for {len(missing)} of {len(bench.pairs)} pairs ({_listing(missing)}): {how}"
        )
    if extra:
        log.warning("outputs=%s: %d file(s) match no benchmark pair, ignored: %s", folder, len(extra), _listing(extra))
    resized = [files[(c, s)].name for c, s in bench.pairs if _check_result(files[(c, s)], bench.contents[c][1], folder)]
    if resized:
        log.warning(
            "outputs=%s: %d result(s) resized to their content's size: %s", folder, len(resized), _listing(resized)
        )
    return OutputsFolder(folder, "csv" if by_csv else "names", dict(sorted(files.items())), extra, resized)


def outputs_candidate(outputs: OutputsFolder, bench: Benchmark, label: str) -> Candidate:
    """A Candidate whose result for a benchmark pair is its file (resized to the content's size where needed); it
    has no alpha and is not timed."""
    by_paths = {(bench.contents[c][0], bench.styles[s][0]): (c, path) for (c, s), path in outputs.files.items()}

    def result(content_path: Path, style_path: Path) -> Tensor:
        ci, path = by_paths[(content_path, style_path)]
        image = load_image_tensor(path)
        size = tuple(bench.contents[ci][1].shape[-2:])
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        return image.clamp(0, 1)[None]

    def stylise(content: Tensor, style: Tensor, alpha: float) -> Tensor:
        raise ConfigError(
            f"{label} (outputs={outputs.folder}) holds results of the benchmark's pairs only: it cannot stylise "
            "other images (videos=, the alpha sweep)"
        )

    return Candidate(label, stylise, outputs.info(), supports_alpha=False, result_for=result)
