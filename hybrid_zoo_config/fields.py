"""Run configurations as dataclasses whose fields carry their own command-line help: the one way a configuration
becomes a command line here (``TrainConfig``, ``BenchConfig``). Field ``foo_bar`` is the flag ``--foo-bar``."""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

QUIET_HELP = 'print only warnings, errors and the result: no progress, no INFO lines'
VERBOSE_HELP = (
    "also show the INFO lines of the libraries underneath (Accelerate's checkpoint files, one line per Hub request, "
    "the ONNX exporter's rewrites)"
)


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``-v/--verbose`` (one or the other), as every command that shows progress has them."""
    group = parser.add_argument_group('output').add_mutually_exclusive_group()
    group.add_argument('-q', '--quiet', action='store_true', help=QUIET_HELP)
    group.add_argument('-v', '--verbose', action='store_true', help=VERBOSE_HELP)


def verbosity_of(args: argparse.Namespace) -> int:
    """-1 (quiet), 0 or 1 (verbose): the level ``hybrid_zoo.logs.setup_logging`` takes."""
    return -1 if args.quiet else 1 if args.verbose else 0


class IntRange:
    """An argparse ``type``: an integer from ``low`` to ``high``; the error names the flag, the range and the value.

    ``high`` may be a function, called only when the flag is given (a bound read from an optional library, such as
    the newest opset of the installed onnx). :meth:`bounds` gives the range the parser checks, so tests can draw
    values on both sides of it without repeating the numbers.
    """

    def __init__(self, flag: str, low: int, high: int | Callable[[], int], unit: str = '') -> None:
        self.flag, self.low, self.high, self.unit = flag, low, high, unit

    def bounds(self) -> tuple[int, int]:
        """``(low, high)``, both included."""
        return self.low, self.high() if callable(self.high) else self.high

    def __call__(self, text: str) -> int:
        low, high = self.bounds()
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f'{self.flag}: expected an integer from {low} to {high}{self.unit}, got {text!r}'
            )
        return value


def option(default: Any, help: str, group: str, **argparse_kwargs: Any) -> Any:
    """A dataclass field with its command-line help, its argument group and any extra ``add_argument`` settings.

    ``flag='--name'`` in ``argparse_kwargs`` replaces the flag derived from the field name; ``aliases=('-b',)`` adds
    other names for it (timm's ``train.py`` spellings of the same option).
    """
    meta = {'help': help, 'group': group, 'argparse': argparse_kwargs}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class KeyValueAction(argparse.Action):
    """``--flag KEY=VALUE ...`` -> ``{KEY: VALUE}``, values parsed as Python literals (a bare word is a string)."""

    def __call__(self, parser, namespace, values, option_string=None):
        kwargs = {}
        for item in values:
            key, sep, value = item.partition('=')
            if not sep:
                parser.error(f'{option_string} expects KEY=VALUE, got {item!r}')
            try:
                kwargs[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kwargs[key] = value
        setattr(namespace, self.dest, kwargs)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, groups: dict | None = None) -> None:
    """Add one flag per field of the dataclass ``cls`` that carries :func:`option` metadata.

    Booleans become a switch (``--x``) when off by default and ``--x / --no-x`` when on; tuples take as many
    values as their type says (``tuple[str, ...]``: one or more); dicts take ``KEY=VALUE`` pairs. A default other
    than None/False/empty is appended to the help.
    """
    hints = typing.get_type_hints(cls)
    groups = {} if groups is None else groups
    for f in dataclasses.fields(cls):
        if 'help' not in f.metadata:
            continue
        meta = f.metadata
        group = groups.get(meta['group']) or groups.setdefault(meta['group'], parser.add_argument_group(meta['group']))
        extra = dict(meta['argparse'])
        flag = extra.pop('flag', '--' + f.name.replace('_', '-'))
        aliases = tuple(extra.pop('aliases', ()))
        kwargs = {'help': meta['help'], 'dest': f.name, **extra}
        tp = _strip_optional(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if 'default' not in kwargs['help'] and default not in (None, False, {}, ()):
            shown = ' '.join(map(str, default)) if isinstance(default, tuple) else default
            kwargs['help'] += f' (default: {shown})'
        if tp is bool:
            kwargs.setdefault('action', argparse.BooleanOptionalAction if default else 'store_true')
        elif typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            variadic = len(args) == 2 and args[1] is Ellipsis
            kwargs.setdefault('nargs', '+' if variadic else len(args))
            kwargs['type'] = args[0]
        elif typing.get_origin(tp) is dict or tp is dict:
            kwargs.update(nargs='*', action=KeyValueAction, metavar='KEY=VALUE')
        else:
            kwargs['type'] = tp
        group.add_argument(flag, *aliases, default=list(default) if isinstance(default, tuple) else default, **kwargs)


def config_from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """An instance of the dataclass ``cls`` from the parsed flags (tuples back as tuples; other keys ignored)."""
    values = vars(namespace)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            if typing.get_origin(_strip_optional(hints[f.name])) is tuple and value is not None:
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)
