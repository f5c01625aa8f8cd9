"""Choices and defaults the commands offer, in a module with no heavy imports: the command-line parsers
(``styletransfer.cli``) list them in ``--help`` and the library uses them, from this one place."""

#: ONNX opsets ``styletransfer-export --opset`` accepts (onnxruntime 1.18+ runs all of them); the first is the
#: default, the torch.export-based exporter's native one (lower opsets need a version conversion).
OPSETS = (18, 19, 20, 21)
#: Inference precisions, spelt as training's trainer.precision: float32, or bfloat16 autocast.
PRECISIONS = ("32-true", "bf16-mixed")
#: Which graphs ``styletransfer-export --part`` writes.
EXPORT_PARTS = ("image", "style", "both")
#: Image cache formats (``styletransfer-prepare --format``): jpeg (compact, GPU-decodable) or raw uint8 pixels.
CACHE_FORMATS = ("jpeg", "raw")
#: ``styletransfer-prepare`` defaults: shorter side, format, JPEG quality and shard size in MiB (large enough for few
#: files, small enough that an interrupted run loses little).
PREPARE_SHORT_SIDE, PREPARE_FORMAT, PREPARE_QUALITY, PREPARE_SHARD_MB = 512, "jpeg", 95, 128.0
