"""``python -m styletransfer.sweeps SWEEP_DIR``: (re)write the trials table of a sweep that is running or was stopped."""

from styletransfer.sweeps.table import main

if __name__ == "__main__":
    raise SystemExit(main())
