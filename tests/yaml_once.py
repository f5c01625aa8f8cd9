"""Each distinct YAML text parsed once in a test process: Hydra reads the same config files (ours and its own, about
20 a compose) again in every compose, and PyYAML's pure-Python parse of them is a fifth of a compose's time."""

from __future__ import annotations

import copy

import pytest


def parse_each_yaml_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``yaml.load`` (PyYAML's public function, through which OmegaConf reads each file Hydra hands it) parses each
    distinct text once and returns a deep copy of that parse after. A parse depends on nothing but the text and the
    loader, so each compose sees what reading the file would give; should a later Hydra or OmegaConf read files
    otherwise, the compositions are unchanged, only slower. (Hydra has no public way to keep its loaded configs
    between composes.)"""
    import yaml

    parse, parsed = yaml.load, {}

    def load(stream, Loader):  # noqa: N803 (PyYAML's own name)
        text = stream if isinstance(stream, (str, bytes)) else stream.read()
        key = (text, Loader.__module__, Loader.__qualname__)
        if key not in parsed:
            parsed[key] = parse(text, Loader=Loader)
        return copy.deepcopy(parsed[key])

    monkeypatch.setattr(yaml, "load", load)
