"""The configuration reference (docs/configuration-reference.md), generated from the config dataclasses.

`reference_markdown()` walks the sections of a search config (`SearchConfig`) and of a retrain recipe
(`RetrainConfig`): every key with its YAML path, type, default and description. The descriptions are the
comments config.py writes beside each field (nanoGPT style: a trailing comment, or comment lines right above the
field), read from the source with `ast` and `tokenize`; a section's text is its class docstring. The named recipes
(`TRAIN_RECIPES`, `RETRAIN_RECIPES`) are listed by the values they change.

`python -m menas.config_doc > docs/configuration-reference.md` (`make docs`) regenerates the file; a test checks
that the committed file equals what this module renders. Imports only `menas.config` from menas; never torch.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from typing import Any, Literal, Union

from menas import config

#: The documents a user writes: (title, root dataclass, where it is read).
ROOTS: tuple[tuple[str, type, str], ...] = (
    (
        "Search config",
        config.SearchConfig,
        "The YAML file of `menas search --config FILE.yaml`, and its `--set KEY=VALUE` overrides; a run keeps the "
        "resolved config as `config.yaml`.",
    ),
    (
        "Retrain recipe",
        config.RetrainConfig,
        "Written as `recipe.yaml` beside a retrained or transferred network; `menas retrain` and `menas transfer` "
        "take `--set KEY=VALUE` on its keys, on top of the `--recipe` they start from.",
    ),
)

#: Comments that are tool directives, not descriptions.
_DIRECTIVE = re.compile(r"^(fmt:|noqa\b|type:\s*ignore|pragma\b|pylint:)")


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key as the reference shows it."""

    path: str  # the dotted YAML path, e.g. "train.lr" (what `--set` takes)
    type: str  # the allowed values, in YAML words
    default: str  # the default as YAML would write it
    description: str  # the field's comments in config.py, joined into one paragraph ("" when it has none)


@dataclasses.dataclass(frozen=True)
class Section:
    """A config dataclass: its dotted prefix ("" at the top level), class, description and plain keys."""

    prefix: str
    cls: type
    description: str
    keys: tuple[Key, ...]


# --------------------------------------------------------------------------------------------- reading config.py


def field_comments(cls: type) -> dict[str, str]:
    """Each field's description: the comment lines directly above it (no blank line between) and the comment at
    the end of its statement, joined with spaces. Fields without a comment are left out."""
    source = textwrap.dedent(inspect.getsource(cls))
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whether the line holds only the comment)
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            text = tok.string.lstrip("#").strip()
            if not _DIRECTIVE.match(text):
                comments[row] = (text, not lines[row - 1][:col].strip())
    result: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: list[str] = []
        row = stmt.lineno - 1
        while row in comments and comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        trailing = [comments[r][0] for r in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if r in comments]
        text = " ".join(part for part in [*above, *trailing] if part)
        if text:
            result[stmt.target.id] = text
    return result


def class_description(cls: type) -> str:
    """The class docstring written in config.py as one paragraph per blank-line-separated block (dataclasses
    make up a `__doc__` for classes without one: that one is not used)."""
    source = textwrap.dedent(inspect.getsource(cls))
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    doc = ast.get_docstring(node) or ""
    return "\n\n".join(_paragraph(block) for block in re.split(r"\n\s*\n", doc.strip()) if block.strip())


def _paragraph(block: str) -> str:
    """A docstring block's lines joined into one line, or one line per item when it is a `*`/`-` list."""
    items: list[str] = []
    for line in block.splitlines():
        text = line.strip()
        if not items or text.startswith(("* ", "- ")):
            items.append(text)
        else:
            items[-1] += " " + text
    return "\n".join(items)


def type_text(hint: Any) -> str:
    """The values a type hint allows, in the words of a YAML file."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " \\| ".join(f"`{_yaml(a)}`" for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        plain = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(plain + (["`null`"] if type(None) in args else []))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "`null`"}
    if hint in names:
        return names[hint]
    return getattr(hint, "__name__", str(hint))


def _yaml(value: Any) -> str:
    """A value as a YAML file writes it (floats with a '.', which PyYAML needs to read 1e-05 as a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):  # YAML's spellings
            return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[repr(value)]
        text = repr(value)
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value) if str(value) else '""'


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def sections(root: type, prefix: str = "") -> list[Section]:
    """`root` and its nested config dataclasses, depth first, each with its plain (non-section) keys."""
    hints = typing.get_type_hints(root)
    comments = field_comments(root)
    keys: list[Key] = []
    nested: list[Section] = []
    for field in dataclasses.fields(root):
        if not field.init:
            continue
        path = f"{prefix}{field.name}"
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            nested.extend(sections(hint, f"{path}."))
            continue
        default = _default(field)
        shown = "(required)" if default is dataclasses.MISSING else f"`{_yaml(default)}`"
        keys.append(Key(path, type_text(hint), shown, comments.get(field.name, "")))
    return [Section(prefix.rstrip("."), root, class_description(root), tuple(keys)), *nested]


# --------------------------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(keys: tuple[Key, ...]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key in keys:
        rows.append(f"| `{key.path}` | {key.type} | {key.default} | {_cell(key.description)} |")
    return rows


def _flat(changes: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: value` of a recipe's changes, nested mappings as dotted keys."""
    items: list[str] = []
    for key, value in changes.items():
        if isinstance(value, dict):
            items.extend(_flat(value, f"{prefix}{key}."))
        else:
            items.append(f"`{prefix}{key}: {_yaml(value)}`")
    return items


def _recipes() -> list[str]:
    lines = [
        "## Named recipes",
        "",
        "What each named recipe changes from the defaults above. A retrain recipe's `data` changes apply on top of "
        "the data config the network was searched with.",
        "",
        "| recipe | kind | changes from the defaults |",
        "|---|---|---|",
    ]
    for name, changes in config.TRAIN_RECIPES.items():
        text = ", ".join(_flat(changes, "train.")) or "none (the defaults are this recipe)"
        lines.append(f"| `{name}` | training recipe (`train.recipe`) | {text} |")
    for name, changes in config.RETRAIN_RECIPES.items():
        text = ", ".join(_flat(changes)) or "none"
        lines.append(f"| `{name}` | retrain recipe (`recipe`) | {text} |")
    return lines


def reference_markdown() -> str:
    """The whole reference, as docs/configuration-reference.md holds it."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from src/menas/config.py by `make docs` (python -m menas.config_doc); do not edit. -->",
        "",
        "Every key of a search config and of a retrain recipe: its YAML path (what `--set` takes), the values it "
        "allows, its default, and the comment config.py keeps beside it. How configs and `--set` work: "
        "[configuration.md](configuration.md).",
    ]
    shown: set[type] = set()
    for title, root, used_by in ROOTS:
        out += ["", f"## {title}", "", used_by, ""]
        for section in sections(root):
            if section.prefix and section.cls in shown:
                out += [f"- `{section.prefix}`: the keys of `{section.prefix}` in the search config above.", ""]
                continue
            shown.add(section.cls)
            heading = f"`{section.prefix}`" if section.prefix else f"{title}: top-level keys"
            out += [f"### {heading}", ""]
            if section.description:
                out += [section.description, ""]
            if section.keys:
                out += [*_table(section.keys), ""]
        while out and out[-1] == "":
            out.pop()
    out += ["", *_recipes()]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(reference_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
