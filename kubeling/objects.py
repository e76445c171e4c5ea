"""Converting objects between protobuf messages and Kubernetes-shaped dicts.

Manifests (YAML / JSON) become messages through `google.protobuf.json_format`
because every proto field carries Kubernetes' JSON name. This module adds what
json_format alone does not do the Kubernetes way: numbers printed as numbers
(int64 and IntOrString), errors that name the document's field, and reading a
field by its path for field selectors.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from kubeling import kinds


class ManifestError(ValueError):
    """A manifest that cannot become an object; the message names the field."""


_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)" at "([^"]*)"')
_FAILED_FIELD = re.compile(r'Failed to parse (\w+) field: (.*)')


def from_dict(doc: Any) -> Message:
    """Turn one manifest document into its typed message.

    Raises ManifestError naming the problem: a missing or unknown kind, a
    wrong apiVersion, a field kubeling does not support, a value of the wrong type.
    """
    if not isinstance(doc, dict):
        raise ManifestError(f"expected an object with apiVersion and kind, got {type(doc).__name__}")
    kind_name = doc.get("kind")
    if not kind_name:
        raise ManifestError("Object 'Kind' is missing")
    try:
        kind = kinds.by_kind(kind_name)
    except kinds.UnknownKindError as e:
        raise ManifestError(str(e)) from None
    api_version = doc.get("apiVersion")
    if not api_version:
        raise ManifestError(f"{kind_name}: apiVersion is missing (expected {kind.api_version!r})")
    if api_version != kind.api_version:
        raise ManifestError(f"{kind_name}: no kind {kind_name!r} is registered for version "
                            f"{api_version!r} (expected {kind.api_version!r})")
    obj = kind.message()
    try:
        json_format.ParseDict(doc, obj)
    except json_format.ParseError as e:
        raise ManifestError(f"{kind_name}: {_explain(str(e))}") from None
    return obj


def _explain(message: str) -> str:
    m = _UNKNOWN_FIELD.search(message)
    if m:
        _, field, where = m.groups()
        path = where.split(".", 1)[1] if "." in where else ""
        full = f"{path}.{field}" if path else field
        return f'unknown field "{full}": kubeling does not support this field'
    return message.replace("Failed to parse ", "invalid value for ")


def to_dict(obj: Message) -> dict:
    """The object as Kubernetes prints it: JSON names, numbers as numbers,
    empty fields left out."""
    raw = json_format.MessageToDict(obj, preserving_proto_field_name=False)
    return _numbers(obj, raw)


def _numbers(msg: Message, d: dict) -> dict:
    """json_format writes int64 as strings and Value numbers as floats;
    Kubernetes writes both as plain integers."""
    for field in msg.DESCRIPTOR.fields:
        key = field.json_name
        if key not in d:
            continue
        value = d[key]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            mt = field.message_type
            if mt.full_name in ("google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"):
                d[key] = _plain_numbers(value)
            elif mt.GetOptions().map_entry:
                vfield = mt.fields_by_name["value"]
                if vfield.type == FieldDescriptor.TYPE_MESSAGE:
                    container = getattr(msg, field.name)
                    if vfield.message_type.full_name == "google.protobuf.Value":
                        d[key] = {k: _plain_numbers(v) for k, v in value.items()}
                    else:
                        d[key] = {k: _numbers(container[k], v) for k, v in value.items()}
                elif vfield.type in _INT64:
                    d[key] = {k: int(v) for k, v in value.items()}
            elif field.is_repeated:
                d[key] = [_numbers(m, v) for m, v in zip(getattr(msg, field.name), value)]
            elif mt.full_name != "google.protobuf.Timestamp":
                d[key] = _numbers(getattr(msg, field.name), value)
        elif field.type in _INT64:
            d[key] = [int(v) for v in value] if field.is_repeated else int(value)
    return d


_INT64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64)


def _plain_numbers(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_plain_numbers(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain_numbers(x) for k, x in v.items()}
    return v


def field_value(obj: Message, path: str) -> str | None:
    """The value at a dotted JSON path ("spec.nodeName") as a string, for
    field selectors; None when the path names no scalar field. Unset scalars
    read as their zero value ("" / "0" / "false"), as in Kubernetes."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Message):
            return None
        field = _field_by_json_name(current, part)
        if field is None or field.is_repeated:
            return None
        current = getattr(current, field.name)
    if isinstance(current, Message):
        return None
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def _field_by_json_name(msg: Message, name: str) -> FieldDescriptor | None:
    desc = msg.DESCRIPTOR
    for field in desc.fields:
        if field.json_name == name or field.name == name:
            return field
    return None


def copy(obj: Message) -> Message:
    """A deep copy, to change an object taken from a cache."""
    new = type(obj)()
    new.CopyFrom(obj)
    return new


def key_of(obj: Message) -> str:
    """"namespace/name", or "name" for cluster-scoped objects, as informers key them."""
    ns = obj.metadata.namespace
    return f"{ns}/{obj.metadata.name}" if ns else obj.metadata.name
