"""The YAML metadata of a README (``cardData``), parsed with bounded work and served as plain JSON.

``yaml.safe_load`` keeps anchors as shared references, which ``json.dumps`` then expands: a few hundred bytes of
nested aliases ("billion laughs") become gigabytes. This loader refuses aliases and deep nesting, caps the size
of the front matter, and turns YAML's non-JSON scalars into what the Hub serves: dates and timestamps stay the
text written, ``!!binary`` its base64 text, ``!!set`` a list, an integer written in more than 40 characters its
text.
"""

from __future__ import annotations

import math
import re
from typing import Any

try:  # PyYAML is in the hub extra; without it cards are stored and served, but never parsed
    import yaml
except ImportError:  # pragma: no cover - exercised only without the hub extra
    yaml = None

MAX_FRONT_MATTER = 256 * 1024
MAX_DEPTH = 64
MAX_INT_TEXT = 40  # an integer written longer than this is served as its text
_FRONT_MATTER = re.compile(r'\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)', re.S)


class CardError(ValueError):
    """README metadata the server refuses; the message says what was expected and what was given."""


if yaml is not None:

    class _CardLoader(yaml.SafeLoader):
        """``SafeLoader`` without aliases and with bounded nesting: every node is built once, from the text."""

        _depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise CardError(f'YAML aliases (*name) are not allowed in card metadata (line {mark.line + 1})')
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise CardError(f'card metadata is nested deeper than {MAX_DEPTH} levels')
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    def _scalar_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        return loader.construct_scalar(node)

    def _int_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
        # ``0x`` and a few thousand digits is a valid YAML int that JSON readers cannot take (and that Python will
        # not even print past 4,300 decimal digits); sexagesimal ``1:0:0:...`` grows as fast
        text = loader.construct_scalar(node)
        return text if len(text) > MAX_INT_TEXT else yaml.SafeLoader.construct_yaml_int(loader, node)

    def _set_as_list(loader: yaml.SafeLoader, node: yaml.MappingNode) -> list:
        return [loader.construct_object(key, deep=True) for key, _ in node.value]

    _CardLoader.add_constructor('tag:yaml.org,2002:timestamp', _scalar_text)
    _CardLoader.add_constructor('tag:yaml.org,2002:binary', _scalar_text)
    _CardLoader.add_constructor('tag:yaml.org,2002:set', _set_as_list)
    _CardLoader.add_constructor('tag:yaml.org,2002:int', _int_or_text)


def _jsonable(value: Any) -> Any:
    """Plain JSON data: string keys, lists for tuples, finite floats (``.nan``/``.inf`` become strings)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def parse_card(text: str) -> dict | None:
    """The metadata of README ``text`` as JSON-ready data, or None without front matter (or without PyYAML).

    Raises:
        CardError: the front matter is too big, is not valid YAML, uses aliases, nests too deep, or is not a
            mapping.
    """
    m = _FRONT_MATTER.match(text)
    if not m or yaml is None:
        return None
    front = m.group(1)
    if len(front) > MAX_FRONT_MATTER:
        raise CardError(f'card metadata is {len(front)} characters long; expected at most {MAX_FRONT_MATTER}')
    try:
        data = yaml.load(front, Loader=_CardLoader)  # a SafeLoader subclass: no arbitrary objects
    except CardError:
        raise
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise CardError(f'card metadata is not valid YAML: {e}') from None
    if data is not None and not isinstance(data, dict):
        raise CardError(f'card metadata must be a YAML mapping (key: value lines), got a {type(data).__name__}')
    return _jsonable(data) if data is not None else None
