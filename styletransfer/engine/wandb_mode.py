"""Make wandb safe to use by default: offline without credentials, never a prompt, never a hang."""

from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    """True when wandb can authenticate without asking: WANDB_API_KEY, or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_wandb_mode() -> str:
    """Decide the wandb mode for this process and set WANDB_MODE once, at start.

    An explicit WANDB_MODE is respected. Otherwise: online with credentials, offline without (and the user
    is told how to upload later). Setting it once here avoids WandbLogger(offline=...) flipping it per logger.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if has_wandb_credentials():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    log.warning(
        "wandb: no credentials (WANDB_API_KEY or `wandb login`); logging offline. "
        "Upload later with `wandb sync <run dir>/wandb/offline-run-*`, or choose logger=csv / logger=tensorboard."
    )
    return "offline"
