"""The configuration reference: every key of every group option, its type (from the
schema), its default and the comment beside it in `conf/`.

The docs build renders it (`docs/hooks.py`), and a test fails on a key without a
comment, so the reference is the config as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.config.schema import CONF_DIR

GROUPS = ("data", "model", "search_space", "tuner", "tracking", "train", "cluster")
# Mappings documented as a whole: the search space's specs (see conf/search_space/), the
# pinned files of a reference (names, packages and checksums)
WHOLE_SECTIONS = ("search_space", "reference.minilm-lr.files")
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*|'[^']+'|\"[^\"]+\"):(?P<rest>.*)$")


@dataclass(frozen=True)
class Key:
    path: str  # dotted, e.g. data.csv.sep
    type: str
    default: str
    description: str
    options: tuple[str, ...]  # the group options that have it (empty: every option)


def _comment_of(rest: str) -> str:
    """The comment in what follows `key:` on one YAML line (quotes respected)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[i + 1 :].strip()
    return ""


def yaml_comments(path: Path, package: str) -> dict[str, str]:
    """Dotted key -> its comment: the one on its line (and the comment lines under it that
    are indented past the key), else the comment lines right above it."""
    lines = path.read_text().splitlines()
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key)
    above: list[str] = []
    last: tuple[str, int] | None = None  # (dotted key, comment column) for continuations
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            column = len(line) - len(line.lstrip())
            text = stripped.lstrip("#").strip()
            if last and column > last[1] and found.get(last[0]):
                found[last[0]] += " " + text
                continue
            if not text.startswith("@package"):
                above.append(text)
            last = None
            continue
        if not stripped:
            above, last = [], None
            continue
        match = KEY_LINE.match(line)
        if not match or stripped.startswith("- "):
            above, last = [], None
            continue
        indent = len(match["indent"])
        key = match["key"].strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([p for p in (package, *[k for _, k in stack], key) if p])
        comment = _comment_of(match["rest"])
        found[dotted] = comment or " ".join(above)
        last = (dotted, indent) if comment else None
        above = []
        stack.append((indent, key))
    return found


def _package_of(path: Path) -> str:
    first = path.read_text().split("\n", 1)[0]
    if first.startswith("# @package"):
        package = first.split("@package", 1)[1].strip()
        return "" if package == "_global_" else package
    return "" if path.parent == CONF_DIR else path.parent.name


def all_comments() -> dict[str, str]:
    """Comments of `conf/config.yaml` and every group option (experiments excluded: presets
    document themselves); a key commented in several files keeps the longest comment."""
    comments: dict[str, str] = {}
    files = [CONF_DIR / "config.yaml"] + sorted(
        p for g in GROUPS for p in (CONF_DIR / g).glob("*.yaml")
    )
    for path in files:
        for key, text in yaml_comments(path, _package_of(path)).items():
            if len(text) > len(comments.get(key, "")):
                comments[key] = text
    for group in WHOLE_SECTIONS:  # a group as a whole: the comment opening its default
        default = CONF_DIR / group / "default.yaml"
        opening = []
        for line in default.read_text().splitlines() if default.exists() else []:
            if not line.startswith("#"):
                break
            opening.append(line.lstrip("#").strip())
        if opening:
            comments.setdefault(group, " ".join(opening))
    return comments


def _type_name(cfg: DictConfig, key: str) -> str:
    node = cfg._get_node(key)
    ref = getattr(node, "_metadata", None) and node._metadata.ref_type
    if ref is None or ref is Any:
        value = cfg[key] if not OmegaConf.is_missing(cfg, key) else None
        return type(value).__name__ if value is not None else "any"
    name = getattr(ref, "__name__", None) or str(ref).replace("typing.", "")
    choices = getattr(ref, "__members__", None)
    if choices:
        return " | ".join(str(m.value) for m in ref)
    return name


def _default(cfg: DictConfig, key: str) -> str:
    if OmegaConf.is_missing(cfg, key):
        return "??? (required)"
    node = cfg._get_node(key)
    if node._is_interpolation():
        return str(node._value())
    value = cfg[key]
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) and value == "" else str(value)


def _leaves(cfg: DictConfig, prefix: str = ""):
    for key in cfg.keys():
        path = f"{prefix}{key}"
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            if path in WHOLE_SECTIONS or len(node) == 0:
                yield cfg, key, path
                continue
            yield from _leaves(node, path + ".")
        elif not (node._is_none() and isinstance(node, DictConfig)):  # another option's section
            yield cfg, key, path


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def collect() -> list[Key]:
    """Every key of the composed config: the default composition's, and under each group
    the keys of each of its options (naming the options when not all have the key)."""
    from pipeline.config.compose import compose_config

    comments = all_comments()
    seen: dict[str, dict[str, Any]] = {}

    def add(cfg: DictConfig, group: str | None, option: str | None) -> None:
        for parent, key, path in _leaves(cfg):
            top = path.split(".", 1)[0]
            if top == "hydra" or (group is not None and top != group):
                continue
            entry = seen.setdefault(path, {"type": _type_name(parent, key), "in": set()})
            own = option is not None and path.split(".")[1:2] == [option.split("=")[1]]
            if path in WHOLE_SECTIONS:  # a group's folder, or the file that holds it
                where = f"conf/{path}/" if (CONF_DIR / path).is_dir() else "conf/config.yaml"
                entry.setdefault("default", f"(a mapping: see {where})")
            elif own or "default" not in entry:
                entry["default"] = _default(parent, key)
            if option:
                entry["in"].add(option)

    add(compose_config([]), None, None)
    options = {g: _group_options(g) for g in GROUPS}
    for group, names in options.items():
        for name in names:
            add(compose_config([f"{group}={name}"]), group, f"{group}={name}")
    keys = []
    for path, entry in seen.items():
        group = path.split(".", 1)[0]
        every = {f"{group}={o}" for o in options.get(group, [])}
        only = () if not entry["in"] or entry["in"] == every else tuple(sorted(entry["in"]))
        keys.append(Key(path, entry["type"], entry["default"], comments.get(path, ""), only))
    return sorted(keys, key=lambda k: k.path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown(keys: list[Key] | None = None) -> str:
    keys = collect() if keys is None else keys
    lines = [
        "Generated from `pipeline/config/schema.py` (types) and the comments in `conf/`",
        "(defaults and meaning) by `pipeline/config/reference.py` when the site is built.",
        "Keys that only some group options have name them (`data=csv`).",
        "",
    ]
    section = None
    for key in keys:
        top = key.path.split(".", 1)[0]
        if top != section:
            section = top
            lines += ["", f"## `{top}`", "", "| key | type | default | what it does |"]
            lines += ["| --- | --- | --- | --- |"]
        where = f" (only {', '.join(f'`{o}`' for o in key.options)})" if key.options else ""
        lines.append(
            f"| `{key.path}` | {_cell(key.type)} | `{_cell(key.default)}` | "
            f"{_cell(key.description)}{where} |"
        )
    return "\n".join(lines) + "\n"
