"""WCT's reconstruction decoders: the architecture lives in :mod:`styletransfer.nn.reconstruction` (shared with
Linear Style Transfer, which runs one of them behind its transformation module); re-exported here under WCT's names."""

from styletransfer.nn.reconstruction import (
    LEVELS,
    Decoders,
    ReconstructionDecoder,
    Step,
    build_decoders,
    check_levels,
    decoder_plan,
)

#: WCT's name for a reconstruction decoder.
WCTDecoder = ReconstructionDecoder

__all__ = ["LEVELS", "Decoders", "Step", "WCTDecoder", "build_decoders", "check_levels", "decoder_plan"]
