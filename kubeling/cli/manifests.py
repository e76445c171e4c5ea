"""Reading `-f FILE|DIR|-`: multi-document YAML or JSON into typed objects.

Every document is parsed and turned into its message before anything is
sent to a server, so one bad document stops the whole command. Errors name
the file and the document (counted from 1, in file order, empty documents
included so the number points at the right place):

    web.yaml (document 2): Deployment: unknown field "spec.foo": kubeling does not support this field
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, TextIO

import yaml
from google.protobuf.message import Message

from kubeling import kinds
from kubeling.objects import ManifestError, from_dict

EXTENSIONS = (".yaml", ".yml", ".json")
STDIN = "-"


class ManifestReadError(ValueError):
    """One or more problems reading manifests; `.errors` has one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Manifest:
    """One object read from a manifest, and where it came from."""

    obj: Message
    source: str      # the file as the user named it ("stdin" for -)
    document: int    # 1-based document number in that file
    item: int | None = None  # 1-based index inside a `kind: List`

    @property
    def kind(self) -> kinds.Kind:
        return kinds.of(self.obj)

    @property
    def where(self) -> str:
        """`web.yaml (document 2)` / `web.yaml (document 1, item 3)`."""
        detail = f"document {self.document}"
        if self.item is not None:
            detail += f", item {self.item}"
        return f"{self.source} ({detail})"

    @property
    def quoted(self) -> str:
        """`"web.yaml" (document 2)`, for kubectl's `error when creating "web.yaml"`."""
        return f'"{self.source}"' + self.where[len(self.source):]


class _Loader(yaml.SafeLoader):
    """YAML as Kubernetes reads manifests: timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_manifests(paths: Iterable[str], recursive: bool = False,
                   stdin: TextIO | None = None) -> list[Manifest]:
    """Every object in `paths` (files, directories, or "-" for stdin), in order.

    Raises ManifestReadError listing every problem found (all files are read,
    so the user sees all mistakes at once); nothing is returned unless all
    documents are valid.
    """
    paths = list(paths)
    if not paths:
        raise ManifestReadError(["must specify one of -f or --filename"])
    manifests: list[Manifest] = []
    errors: list[str] = []
    for source, text in _sources(paths, recursive, stdin, errors):
        try:
            manifests.extend(parse_text(text, source))
        except ManifestReadError as e:
            errors.extend(e.errors)
    if errors:
        raise ManifestReadError(errors)
    if not manifests:
        raise ManifestReadError([f"no objects found in {', '.join(paths)}"])
    return manifests


def _sources(paths: list[str], recursive: bool, stdin: TextIO | None,
             errors: list[str]) -> Iterable[tuple[str, str]]:
    for path in paths:
        if path == STDIN:
            stream = stdin if stdin is not None else sys.stdin
            yield "stdin", stream.read()
            continue
        if os.path.isdir(path):
            files = _directory_files(path, recursive)
            if not files:
                errors.append(f"{path}: no .yaml, .yml or .json files in this directory")
            for f in files:
                text = _read_file(f, errors)
                if text is not None:
                    yield f, text
            continue
        if not os.path.exists(path):
            errors.append(f'the path "{path}" does not exist')
            continue
        text = _read_file(path, errors)
        if text is not None:
            yield path, text


def _directory_files(path: str, recursive: bool) -> list[str]:
    found: list[str] = []
    if recursive:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(EXTENSIONS))
        return found
    return [os.path.join(path, f) for f in sorted(os.listdir(path))
            if f.endswith(EXTENSIONS) and os.path.isfile(os.path.join(path, f))]


def _read_file(path: str, errors: list[str]) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        errors.append(f"{path}: not a text file (expected YAML or JSON)")
    except OSError as e:
        errors.append(f"{path}: {e.strerror or e}")
    return None


def parse_text(text: str, source: str) -> list[Manifest]:
    """The objects in one file's text; ManifestReadError naming source and document."""
    documents = _documents(text, source)
    manifests: list[Manifest] = []
    errors: list[str] = []
    for number, doc in documents:
        if doc is None or doc == {}:
            continue  # empty document (`---` with nothing, or only comments)
        if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
            items = doc.get("items") or []
            if not isinstance(items, list):
                errors.append(f"{source} (document {number}): List: items must be a list")
                continue
            for i, item in enumerate(items, 1):
                _convert(item, source, number, i, manifests, errors)
            continue
        _convert(doc, source, number, None, manifests, errors)
    if errors:
        raise ManifestReadError(errors)
    return manifests


def _convert(doc: Any, source: str, number: int, item: int | None,
             out: list[Manifest], errors: list[str]) -> None:
    m = Manifest(None, source, number, item)  # type: ignore[arg-type]
    try:
        m.obj = from_dict(doc)
    except ManifestError as e:
        errors.append(f"{m.where}: {e}")
        return
    out.append(m)


def _documents(text: str, source: str) -> list[tuple[int, Any]]:
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith(("{", "[")):
        try:
            return _json_documents(stripped)
        except ValueError as e:
            if source.endswith(".json"):
                raise ManifestReadError([f"{source}: error parsing JSON: {e}"]) from None
            # Not JSON after all (a YAML flow mapping, say): fall through to YAML.
    docs: list[tuple[int, Any]] = []
    try:
        for number, doc in enumerate(yaml.load_all(text, Loader=_Loader), 1):
            docs.append((number, doc))
    except yaml.YAMLError as e:
        number = len(docs) + 1
        raise ManifestReadError([f"{source} (document {number}): error parsing YAML: {_yaml_problem(e)}"]) from None
    return docs


def _json_documents(text: str) -> list[tuple[int, Any]]:
    """A JSON document, or a stream of them (`{...}{...}`), as kubectl accepts."""
    decoder = json.JSONDecoder()
    docs: list[tuple[int, Any]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"document {len(docs) + 1}: {e.msg} (line {e.lineno}, column {e.colno})") from None
        docs.append((len(docs) + 1, doc))
    return docs


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    text = f"{context}, {problem}" if context else problem
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return text


def order_for_apply(manifests: list[Manifest]) -> list[Manifest]:
    """Namespaces first, then everything else in file order."""
    first = [m for m in manifests if m.kind.kind == "Namespace"]
    rest = [m for m in manifests if m.kind.kind != "Namespace"]
    return first + rest


def resolve_namespaces(manifests: list[Manifest], flag_namespace: str | None) -> None:
    """Give each namespaced object its namespace: its own, else -n, else "default".

    A manifest naming a namespace other than an explicit -n is an error, as
    in kubectl. Cluster-scoped objects get no namespace.
    """
    errors: list[str] = []
    for m in manifests:
        meta = m.obj.metadata
        if not m.kind.namespaced:
            meta.namespace = ""
            continue
        if meta.namespace and flag_namespace and meta.namespace != flag_namespace:
            errors.append(f'{m.where}: the namespace from the provided object "{meta.namespace}" '
                          f'does not match the namespace "{flag_namespace}". You must pass '
                          f"'--namespace={meta.namespace}' to perform this operation.")
            continue
        meta.namespace = meta.namespace or flag_namespace or "default"
    if errors:
        raise ManifestReadError(errors)


def require_names(manifests: list[Manifest], verb: str) -> None:
    """apply and delete need metadata.name (generateName is for create only)."""
    errors = [f"{m.where}: {m.kind.kind}: metadata.name is required to {verb} an object"
              for m in manifests if not m.obj.metadata.name]
    if errors:
        raise ManifestReadError(errors)
