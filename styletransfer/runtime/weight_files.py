"""The weight files the project knows: where each comes from, what uses it, where it goes and how it is verified.

Every file goes into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), where torchvision's loader and the
metric networks look for them; the AdaIN release's two files go into its ``adain/`` sub-folder (the project has no
default path for them: pass the path ``styletransfer-weights path adain-vgg`` prints as ``--encoder-weights``).

Checksums, and where each value comes from (``WeightFile.source``):

* torchvision's files carry the first 8 hex digits of their SHA-256 in their names (``vgg19-dcbb9e9d.pth``); that
  prefix is what torch.hub's ``check_hash`` verifies, and no full SHA-256 is published, so the prefix is checked;
* the AdaIN release and ArtFID's Inception publish no checksum: the SHA-256 of the first download is recorded
  beside the file (``<file>.sha256``, ``sha256sum`` format) and later checks compare against it (trust on first use).

``nn.encoder`` and ``eval.metric_nets`` take their file names and URLs from here (:func:`known`), so the names the
loaders look for and the ones ``styletransfer-weights`` installs are one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from styletransfer.runtime.download import FULL_SHA256, describe_sha256, sha256_matches
from styletransfer.runtime.files import sha256_file, write_text_atomic

#: Environment variable naming a mirror: each file is fetched from ``<mirror>/<file name>`` instead of its URL.
BASE_URL_ENV = "STYLETRANSFER_WEIGHTS_URL"
#: Suffix of the file recording the SHA-256 of a file without a published checksum (trust on first use).
RECORD_SUFFIX = ".sha256"

_TORCHVISION_PREFIX = "prefix from the file name, as torch.hub verifies (check_hash); no published full SHA-256 found"
_FIRST_USE = "no published checksum: verified against the value recorded at first download (<file>.sha256)"
_ADAIN_RELEASE = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/"


@dataclass(frozen=True)
class WeightFile:
    """One known weight file: the command's name for it, its file name, URL, users, checksum and its source."""

    name: str
    filename: str
    url: str
    used_by: str
    sha256: str | None  # the full SHA-256 or its published prefix; None: trust on first use (recorded)
    source: str  # where the checksum comes from
    subdir: str = ""  # folder under torch.hub's checkpoints/
    #: Tensors a file without a published checksum must hold (key, shape), checked weights-only before its first-use
    #: checksum is recorded: a file that is not these weights is never installed nor trusted.
    holds: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def destination(self) -> Path:
        """The exact path the project looks at for this file."""
        return hub_checkpoint(str(Path(self.subdir) / self.filename))

    def download_url(self) -> str:
        """The URL to fetch: the mirror of ``$STYLETRANSFER_WEIGHTS_URL`` if set, else the published one."""
        base = os.environ.get(BASE_URL_ENV, "").strip()
        return f"{base.rstrip('/')}/{self.filename}" if base else self.url


KNOWN = (
    WeightFile(
        "vgg19",
        "vgg19-dcbb9e9d.pth",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "encoder.weights=imagenet (training, stylising, evaluate.py's metric encoder)",
        "dcbb9e9d",
        _TORCHVISION_PREFIX,
    ),
    WeightFile(
        "vgg16",
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "encoder=vgg16 (encoder.network=vgg16, weights=imagenet: fast neural style's loss network)",
        "397923af",
        _TORCHVISION_PREFIX,
    ),
    WeightFile(
        "adain-vgg",
        "vgg_normalised.pth",
        _ADAIN_RELEASE + "vgg_normalised.pth",
        "the AdaIN release's encoder: --encoder-weights / encoder.weights=PATH",
        None,
        _FIRST_USE,
        "adain",
        # The 1x1 colour conv, conv1_1 and conv4_1 of the release's nn.Sequential (keys at its module indices).
        (("0.weight", (3, 3, 1, 1)), ("2.weight", (64, 3, 3, 3)), ("29.weight", (512, 256, 3, 3))),
    ),
    WeightFile(
        "adain-decoder",
        "decoder.pth",
        _ADAIN_RELEASE + "decoder.pth",
        "the AdaIN release's decoder: styletransfer-stylise PATH --encoder-weights <adain-vgg>",
        None,
        _FIRST_USE,
        "adain",
        # The decoder's first conv (relu4_1's 512 channels in) and its last (3 colour channels out).
        (("1.weight", (256, 512, 3, 3)), ("28.weight", (3, 64, 3, 3))),
    ),
    WeightFile(
        "alexnet",
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "LPIPS in evaluate.py (metrics.lpips_weights)",
        "7be5be79",
        _TORCHVISION_PREFIX,
    ),
    WeightFile(
        "art-inception",
        "art_inception.pth",
        "https://huggingface.co/matthias-wright/art_inception/resolve/main/art_inception.pth",
        "FID / ArtFID in evaluate.py (metrics.inception_weights)",
        None,
        _FIRST_USE,
        "",
        # torchvision's Inception-v3 stem and its last block (the layers ArtFID's features come from).
        (("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)), ("Mixed_7c.branch_pool.conv.weight", (192, 2048, 1, 1))),
    ),
)


def hub_checkpoint(name: str) -> Path:
    """Where torch.hub's cache keeps (and torchvision's loaders look for) a downloaded file called ``name``, read
    from torch itself so that the two never disagree."""
    import torch.hub  # third-party and slow to import: only when a path is needed, not for --help

    return Path(torch.hub.get_dir()) / "checkpoints" / name


def by_name(name: str) -> WeightFile | None:
    """The known file called ``name`` (the command's name or its file name), or None."""
    return next((w for w in KNOWN if name in (w.name, w.filename)), None)


def known(name: str) -> WeightFile:
    """The known file called ``name``; a KeyError for a name the project does not know (a bug, not a user error)."""
    weight = by_name(name)
    if weight is None:
        raise KeyError(f"no known weight file {name!r}")
    return weight


def record_path(path: str | os.PathLike) -> Path:
    """Where the SHA-256 of a file without a published checksum is recorded: beside it, ``<file>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + RECORD_SUFFIX)


def read_record(path: str | os.PathLike) -> str | None:
    """The SHA-256 recorded for ``path`` at its first download, or None when there is no (readable) record."""
    try:
        text = record_path(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return text[0].lower() if text else None


def write_record(path: str | os.PathLike, digest: str) -> Path:
    """Record ``digest`` for ``path`` (``sha256sum -c`` reads it in that folder)."""
    return write_text_atomic(record_path(path), f"{digest}  {Path(path).name}\n")


def verification(weight: WeightFile, path: str | os.PathLike) -> str:
    """How ``path`` checks out against ``weight``'s checksum: "absent", "yes", "yes (prefix)", "yes (recorded)",
    "no record" (a file copied by hand without a published checksum), or "MISMATCH: expected ..., got ..."."""
    path = Path(path)
    if not path.is_file():
        return "absent"
    digest = sha256_file(path)
    expected = weight.sha256 or read_record(path)
    if expected is None:
        return "no record"
    if sha256_matches(digest, expected):
        if weight.sha256 is None:
            return "yes (recorded)"
        return "yes" if len(expected) >= FULL_SHA256 else "yes (prefix)"
    return f"MISMATCH: expected {describe_sha256(expected)}, got {digest}"
