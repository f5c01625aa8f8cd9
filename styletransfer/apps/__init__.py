"""The applications, written once against the feed-forward model protocol (``styletransfer.protocol``): the
stylise command's work, the folder pipeline, video, tiling, ONNX export and runtime, and the demo. They never name
a method."""
