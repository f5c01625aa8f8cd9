"""``python -m styletransfer.stylise``: the stylise command line (same as ``styletransfer-stylise``)."""

import sys

from styletransfer.methods.adain.cli import main

if __name__ == "__main__":
    sys.exit(main())
