"""The config's parsing machinery (maskgan.config is the schema): values checked against their types, dataclasses
built from mappings with one-line errors naming the field, and the one YAML/JSON reader.

`list[str]` fields are checked element by element, so an error names `eval.held_out[1]`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import json.decoder
import json.scanner
import re
import typing
from typing import Any, Literal, Union

from data_loader import ranges


class ConfigError(ValueError):
    """One line: which field, what is wrong, what is allowed."""

    user_error = True


def _check_value(path: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")
        return value
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _check_value(path, option, value)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ConfigError(f"{path}: {value!r} does not fit ({'; '.join(errors)})")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_check_value(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown field (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        sub = f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], sub)
            continue
        value = data[name]
        if "range" in f.metadata and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:  # numbers get the range in their error (also inf or 2.5 for an integer field)
                ranges.check(sub, value, f.metadata["range"], integer=tp is int)
            except ranges.RangeError as e:
                raise ConfigError(str(e)) from None
        kwargs[name] = _check_value(sub, tp, value)
    return cls(**kwargs)


def read_yaml(path: str, what: str) -> Any:
    """The one YAML reader (configs, search spaces): the parsed file, or a one-line ConfigError naming the file.

    `what` names the file's role in the errors ("config", "search space"). Refused, with the line and column
    where the parser says: a file that is not UTF-8 text, a YAML syntax error, and a key given twice in one
    mapping (PyYAML keeps the last silently, so a typo'd override would win unseen). A `.json` file is read
    as JSON with the same checks. An empty file is None.
    """
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x}; "
                          f"a binary file?)") from None
    if path.endswith(".json"):
        return _read_json(path, what, text)
    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader: builds plain data, never objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(e.problem or e.context).split())
        raise ConfigError(f"{path}: {what} is not valid YAML{where}: {problem}") from None
    except yaml.reader.ReaderError as e:  # a character YAML refuses (e.g. NUL): a position, not a mark
        code = ord(e.character) if isinstance(e.character, str) else e.character
        raise ConfigError(f"{path}: {what} is not valid YAML at character {e.position}: unacceptable character "
                          f"#x{code:04x} ({e.reason})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {what} is not valid YAML: {' '.join(str(e).split())}") from None


@functools.lru_cache(maxsize=1)
def _strict_loader():
    import yaml  # imported on first use (the CLI's --help stays fast)

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given at line {first})", key_node.start_mark)
            return super().construct_mapping(node, deep)

    # YAML 1.1 (PyYAML) reads `1e-3` as a string: it wants a dot and a signed exponent. Configs write learning
    # rates that way, so numbers in exponent form resolve as floats here, as YAML 1.2 and JSON read them.
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))

    return StrictLoader


def _read_json(path: str, what: str, text: str) -> Any:
    def pairs_once(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None, *rest):
        pairs, end = json.decoder.JSONObject(s_and_end, strict, scan_once, None, list, memo, *rest)
        keys = [k for k, _v in pairs]
        twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if twice is not None:
            line = s_and_end[0].count("\n", 0, s_and_end[1]) + 1
            raise ConfigError(f"{path}: {what} has duplicate key {twice!r} (in the object at line {line})")
        return dict(pairs), end

    decoder = json.JSONDecoder()
    decoder.parse_object = pairs_once
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # the C scanner ignores parse_object
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: {what} is not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
