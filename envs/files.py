"""Reading the files people hand to taktline (specs, configs, instances) and checking the files
it will write — so that a binary file, a directory, an alias bomb or an unwritable path gets one
clear :class:`~taktline.errors.SpecError` instead of a traceback.

YAML is read with :func:`load_yaml`: PyYAML's safe loader, plus a cap on aliases and on the
nodes the document expands to. PyYAML itself shares aliased nodes, but everything after it
(validation, error messages, hashing) walks the expanded tree, so "billion laughs" — nine
nested anchors, each aliased ten times — would otherwise grow to gigabytes.

>>> load_yaml("a: &x [1, 2]\\nb: *x\\n")
{'a': [1, 2], 'b': [1, 2]}
>>> load_yaml("a: &a [1]\\nb: &b [*a, *a]\\nc: [*b, *b]\\n", max_nodes=8)
Traceback (most recent call last):
...
taktline.errors.SpecError: (document): the YAML expands to more than 8 nodes through its ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from taktline.errors import SpecError

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest spec, config or instance file read (16 MiB; the biggest bundled one is ~50 KB)."""
MAX_ALIASES = 1_000
"""Most ``*alias`` references one YAML document may use."""
MAX_NODES = 1_000_000
"""Most nodes a YAML document may expand to once its aliases are resolved."""


def read_text_file(path: str | Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``, or a :class:`SpecError` that says what is wrong with it.

    Args:
        path: The file.
        what: What the file should be (``"line spec"``), for the messages.
        max_bytes: Larger files are refused before they are read.
    """
    p = Path(path)
    src = str(p)
    if p.is_dir():
        raise SpecError(f"is a directory; expected a {what}", src)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise SpecError(
                f"{size:,} bytes is larger than the {max_bytes:,}-byte limit for a {what};"
                " is this the right file?",
                src,
            )
        with p.open("rb") as fh:
            raw = fh.read(max_bytes + 1)  # a pipe or device reports size 0: cap the read too
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror or exc}", src) from None
    if len(raw) > max_bytes:
        raise SpecError(f"larger than the {max_bytes:,}-byte limit for a {what}", src)
    if b"\0" in raw:
        raise SpecError(f"is a binary file (it contains NUL bytes); expected a {what}", src)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x});"
            f" expected a {what}, saved as UTF-8",
            src,
        ) from None


class _GuardedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents that expand too far through aliases."""

    max_aliases = MAX_ALIASES
    max_nodes = MAX_NODES

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                raise _TooBig(
                    f"the YAML uses more than {self.max_aliases:,} aliases (*name);"
                    " write the data out or use fewer aliases"
                )
        return super().compose_node(parent, index)

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node, self.max_nodes)
        return node


class _TooBig(Exception):
    """Raised inside the loader; turned into a SpecError with the source by load_yaml."""


def _children(node: Node) -> Iterable[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return ()


def _check_expanded_size(root: Node, limit: int) -> None:
    """Count the nodes of the tree the (shared) node graph expands to, without expanding it."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > limit:
                raise _TooBig(
                    f"the YAML expands to more than {limit:,} nodes through its anchors and"
                    " aliases; write the data out or use fewer aliases"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise _TooBig("the YAML refers to itself (an alias inside its own anchor)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def load_yaml(
    text: str, source: str | None = None, max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_NODES
) -> Any:
    """Parse one YAML document safely: plain data only, bounded expansion.

    Raises:
        SpecError: naming the source and the line for syntax errors, or the limit that was hit.
    """
    loader = _GuardedLoader(text)
    loader.max_aliases, loader.max_nodes = max_aliases, max_nodes
    try:
        return loader.get_single_data()
    except _TooBig as exc:
        raise SpecError(str(exc), source or "(document)") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"cannot parse the YAML: {exc}", source) from None
    except RecursionError:
        raise SpecError("the YAML is nested too deeply to read", source) from None
    finally:
        loader.dispose()


def load_data_file(path: str | Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read a ``.json`` file as JSON and anything else as YAML, with the checks above."""
    p = Path(path)
    text = read_text_file(p, what, max_bytes)
    if not text.strip():
        raise SpecError(f"the file is empty; expected a {what}", str(p))
    if p.suffix.lower() != ".json":
        return load_yaml(text, str(p))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"cannot parse the JSON: {exc}", str(p)) from None
    except RecursionError:
        raise SpecError("the JSON is nested too deeply to read", str(p)) from None


def check_output_file(path: Path, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work is done, an output file taktline could not write.

    Args:
        path: Where the output will go.
        option: The option that named it (``"--events"``), for the message.
        suffixes: The accepted file types (``(".csv", ".parquet")``).
    """
    if path.suffix not in suffixes:
        raise SpecError(
            f"{option} {path}: unknown file type {path.suffix or '(none)'!r};"
            f" use one of {', '.join(suffixes)}"
        )
    if path.is_dir():
        raise SpecError(f"{option} {path}: is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise SpecError(f"{option} {path}: folder {str(folder)!r} does not exist; create it first")
    existed = path.exists()
    try:  # the one honest test of writability (permissions, read-only mounts, root or not)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise SpecError(
            f"{option} {path}: cannot write there ({exc.strerror or exc}); choose another path"
        ) from None
    if not existed:
        path.unlink(missing_ok=True)
