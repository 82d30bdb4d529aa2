"""The user's documents stay true to the code: the generated configuration reference is current and complete, the
README stays a short guide that starts with its two commands, every relative link (and heading anchor) of README.md
and docs/*.md resolves, and every `menas` command and flag, `python -m` module and menas import of their code exists.

Files in docs/ whose name starts with "_" are scratch notes, not documents, and are not checked.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import re
import shlex
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from menas import config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration-reference.md"
README_MAX_LINES = 160
#: The config dataclasses a user writes: a search config and a retrain recipe (recipe.yaml).
CONFIG_ROOTS = (config.SearchConfig, config.RetrainConfig)

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
MENAS_COMMAND = re.compile(r"(?<![\w./-])menas(?:\.cli)?\s+(.*)")
PYTHON_MODULE = re.compile(r"(?:^|\s)-m\s+(menas[\w.]*)")


def _documents() -> list[Path]:
    return [README, *sorted(p for p in DOCS.glob("*.md") if not p.name.startswith("_"))]


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------------------------- markdown parsing


def _split_code(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(prose lines, fenced code blocks as (info string, lines)) of a markdown text."""
    prose: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    fence: str | None = None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            blocks.append((line.strip()[3:].strip(), []))
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            blocks[-1][1].append(line)
        else:
            prose.append(line)
    return prose, blocks


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lowercased, every character that is not a letter, digit,
    underscore, hyphen or space removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """The heading anchors of a markdown file, with GitHub's -1, -2, ... for repeated headings."""
    prose, _ = _split_code(path.read_text())
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def link_errors(path: Path, text: str) -> list[str]:
    """The relative links of a markdown text (outside code) whose file, or heading anchor in a markdown file, does
    not exist; `path` is the document the text belongs to."""
    prose, _ = _split_code(text)
    body = INLINE_CODE.sub("", "\n".join(prose))
    errors: list[str] = []
    for target in LINK.findall(body):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            errors.append(f"{_doc_id(path)}: link to {target!r}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            errors.append(f"{_doc_id(path)}: link to {target!r}: no heading with that anchor in {linked.name}")
    return errors


def _command_lines(text: str) -> Iterator[str]:
    """The text after each `menas ` in code: fenced blocks line by line (a trailing `  # comment` cut), and inline
    code spans of the prose."""
    prose, blocks = _split_code(text)
    for _, lines in blocks:
        for line in lines:
            for match in MENAS_COMMAND.finditer(re.split(r"\s#\s", line)[0]):
                yield match.group(1)
    for _, span in INLINE_CODE.findall("\n".join(prose)):
        match = MENAS_COMMAND.match(" ".join(span.split()))
        if match:
            yield match.group(1)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def command_errors(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """`menas SUBCOMMAND [SUB-SUBCOMMAND] --flag ...` in the code of a markdown text that the CLI's parser does not
    know: an unknown subcommand, or a flag the subcommand does not take."""
    errors: list[str] = []
    for rest in _command_lines(text):
        try:
            tokens = shlex.split(rest)
        except ValueError:  # an unbalanced quote in an example: the words are enough
            tokens = rest.split()
        tokens = [t.strip("[]") for t in tokens]
        if not tokens or tokens[0].startswith("-"):  # `menas --version`, or prose such as "menas (the paper)"
            continue
        current, words = parser, []
        for token in tokens:
            commands = _subparsers(current)
            if token.startswith("-") and len(token) > 1:
                flag = token.split("=", 1)[0]
                if flag not in _options(current):
                    errors.append(f"menas {' '.join(words)}: no flag {flag!r}")
            elif commands and re.fullmatch(r"[a-z][a-z0-9-]*", token):
                if token not in commands:
                    where = f"menas {' '.join(words)}".strip()
                    errors.append(f"{where}: no subcommand {token!r} (known: {', '.join(commands)})")
                    break
                current, words = commands[token], [*words, token]
            elif commands:  # e.g. "menas SUBCOMMAND" written as a placeholder
                break
    return errors


def _cli_parser() -> argparse.ArgumentParser:
    """The `menas` command's parser, from the module pyproject.toml's console script points at (imported here,
    lazily, so that a move of the CLI needs no change in this file while `build_parser` stays beside `main`)."""
    match = re.search(r'^menas\s*=\s*"([\w.]+):\w+"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match, 'pyproject.toml: no `menas = "module:function"` console script'
    return importlib.import_module(match.group(1)).build_parser()


# --------------------------------------------------------------------------------------------- config keys


def _config_classes(cls: type) -> Iterator[type]:
    yield cls
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            yield from _config_classes(hints[field.name])


def config_keys(cls: type, prefix: str = "") -> Iterator[str]:
    """The dotted YAML path of every plain (non-section) key of a config dataclass, from the dataclasses."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if dataclasses.is_dataclass(hints[field.name]):
            yield from config_keys(hints[field.name], f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}"


def _documented_keys(text: str) -> set[str]:
    """The keys of the reference's tables: the code span that starts a table row."""
    return set(re.findall(r"^\| `([\w.]+)` \|", text, re.M))


# --------------------------------------------------------------------------------------------- the tests


def test_the_configuration_reference_is_what_make_docs_renders() -> None:
    from menas.config_doc import reference_markdown

    expected = reference_markdown()
    committed = REFERENCE.read_text() if REFERENCE.is_file() else ""
    if committed != expected:
        old, new = committed.splitlines(), expected.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
        pytest.fail(
            f"{_doc_id(REFERENCE)} is not what src/menas/config.py renders (first difference at line {line + 1}): "
            "run `make docs` and commit the result"
        )


def test_every_config_key_of_every_section_is_in_the_reference() -> None:
    defined = {
        obj for obj in vars(config).values() if isinstance(obj, type) and dataclasses.is_dataclass(obj)
        and obj.__module__ == config.__name__
    }  # fmt: skip
    reachable = {cls for root in CONFIG_ROOTS for cls in _config_classes(root)}
    unreached = sorted(cls.__name__ for cls in defined - reachable)
    assert not unreached, (
        f"config dataclasses that neither SearchConfig nor RetrainConfig reaches: {unreached} (document them: "
        "menas.config_doc.ROOTS and CONFIG_ROOTS here)"
    )
    documented = _documented_keys(REFERENCE.read_text())
    keys = [key for root in CONFIG_ROOTS for key in config_keys(root)]
    assert len(keys) > 60, keys  # the walk found the sections
    missing = sorted(set(keys) - documented)
    assert not missing, f"config keys missing from {_doc_id(REFERENCE)}: {missing} (run `make docs`)"


def test_field_comments_are_read_from_the_source() -> None:
    from menas.config_doc import field_comments

    @dataclasses.dataclass
    class Example:
        plain: int = 1
        trailing: int = 2  # the trailing comment
        # the first line above
        # and the second
        above: str = "x"  # and one beside it

        # a comment after a blank line belongs to the next field only if it touches it
        spread: tuple[int, int] = (
            1,
            2,
        )  # after a statement on several lines
        directive: int = 3  # fmt: skip

    assert field_comments(Example) == {
        "trailing": "the trailing comment",
        "above": "the first line above and the second and one beside it",
        "spread": "a comment after a blank line belongs to the next field only if it touches it after a statement "
        "on several lines",
    }


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, allowed: {README_MAX_LINES} (move material to docs/)"
    )
    assert lines[:3] == ["# menas", "", "```"], lines[:3]
    end = lines.index("```", 3)
    commands = [line.split("#")[0].strip() for line in lines[3:end]]
    assert commands == ["make demo", "make test"], commands


def test_every_relative_link_and_anchor_of_the_documents_exists() -> None:
    errors = [error for doc in _documents() for error in link_errors(doc, doc.read_text())]
    assert not errors, "\n".join(errors)


def test_every_menas_command_and_flag_in_the_documents_exists() -> None:
    parser = _cli_parser()
    errors = [f"{_doc_id(doc)}: {error}" for doc in _documents() for error in command_errors(doc.read_text(), parser)]
    assert not errors, "\n".join(errors)
    checked = sum(1 for doc in _documents() for _ in _command_lines(doc.read_text()))
    assert checked > 30, f"only {checked} menas commands found in the documents: is the parsing broken?"


def _runnable(module: str) -> bool:
    """Whether `python -m module` finds something to run: a module, or a package with a `__main__`."""
    try:
        spec = importlib.util.find_spec(module)
        return spec is not None and (
            not spec.submodule_search_locations or bool(importlib.util.find_spec(f"{module}.__main__"))
        )
    except ModuleNotFoundError:  # a parent package does not exist
        return False


def test_every_python_module_the_documents_run_exists() -> None:
    errors = []
    for doc in _documents():
        for module in PYTHON_MODULE.findall(doc.read_text()):
            if not _runnable(module):
                errors.append(f"{_doc_id(doc)}: `python -m {module}` cannot run")
    assert not errors, "\n".join(errors)


def _top_level_names(module: str) -> set[str] | None:
    """The names a menas module defines at its top level, read from its source (no import: no torch); None when
    there is no such module."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    names: set[str] = set()
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def python_errors(text: str) -> list[str]:
    """In the Python code blocks of a markdown text: `from menas... import NAME` of a module or name that does not
    exist, and `menas.NAME` that the top-level package does not offer."""
    import menas

    errors: list[str] = []
    for info, lines in _split_code(text)[1]:
        if info != "python":
            continue
        tree = ast.parse("\n".join(lines))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "menas":
                names = _top_level_names(node.module)
                if names is None:
                    errors.append(f"from {node.module} import ...: no module {node.module}")
                    continue
                errors += [f"from {node.module} import {a.name}: not defined there" for a in node.names
                           if a.name not in names and _top_level_names(f"{node.module}.{a.name}") is None]  # fmt: skip
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "menas"
                and node.attr not in dir(menas)
            ):
                errors.append(f"menas.{node.attr}: not in the menas package")
    return errors


def test_every_python_import_the_documents_show_exists() -> None:
    errors = [f"{_doc_id(doc)}: {error}" for doc in _documents() for error in python_errors(doc.read_text())]
    assert not errors, "\n".join(errors)


def test_the_checks_catch_what_they_are_for() -> None:
    parser = _cli_parser()
    assert github_slug("Test suite (`make test`)") == "test-suite-make-test"
    assert github_slug("`keep_largest` (the guard), 3 seeds") == "keep_largest-the-guard-3-seeds"
    text = "```\nmenas serach --out x\nmenas status --out x\nmenas space shw mt\nmenas report RUN  # --no-flag\n```\n"
    errors = command_errors(text + "Run `menas export --fromat onnx`.\n", parser)
    assert len(errors) == 4, errors
    assert "serach" in errors[0] and "'--out'" in errors[1] and "shw" in errors[2] and "--fromat" in errors[3]
    code = "```python\nimport menas\nfrom menas.space.cost import Budget, Nope\nfrom menas.nope import x\n"
    code += "menas.lod('x')\n```\n"
    assert python_errors(code) == [
        "from menas.space.cost import Nope: not defined there",
        "from menas.nope import ...: no module menas.nope",
        "menas.lod: not in the menas package",
    ]
    doc = DOCS / "searching.md"
    broken = "[a](missing.md) [b](winner.md#no-such-heading) [c](#report) [d](../BENCHMARKS.md) `[e](nothing.md)`"
    assert [e.split(": ", 1)[1] for e in link_errors(doc, broken)] == [
        "link to 'missing.md': no such file",
        "link to 'winner.md#no-such-heading': no heading with that anchor in winner.md",
    ]
