"""Typed options: one dataclass per command, whose fields are its flags and its config-file keys.

A field made with `option(help, default)` becomes the flag `--field-name`, its type read from the
annotation: `int | None` takes an int, a `Literal` gives the choices, `bool` is a switch,
`list[str]` a repeatable flag, `dict[str, float]` takes NAME=NUMBER,NAME=NUMBER and
`dict[str, str]` NAME=VALUE,NAME=VALUE. `None`
means "not set" (0 is always a value). A TOML file given with `--config` sets the same fields by
name (underscores: `batch_size = 64`); a flag given on the command line wins over the file.

Torch-free: every command builds its flags from here before anything imports torch, so that a
serving machine runs an ONNX export without it.
"""

from __future__ import annotations

import argparse
import math
import sys
import typing
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Literal

from sbert.errors import CheckpointError, ConfigError
from sbert.fileio import read_bounded


def option(
    help: str,
    default=None,
    *,
    default_factory: Callable | None = None,
    required: bool = False,
    positional: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    flag: bool = True,
    const: str | None = None,
):
    """A dataclass field that is also a command-line flag (and a config-file key).

    Args:
        help: the flag's --help text (its default is appended).
        required: no default: the flag or the config file must give it.
        positional: an optional positional argument instead of a flag.
        minimum, maximum: the range a number may take (checked for flags and files alike;
            a float must be finite in any case).
        flag: False for a setting that only a config file can give.
        const: the value of the flag given without one (`--ray` alone: "local").
    """
    meta = dict(help=help, required=required, positional=positional, minimum=minimum,
                maximum=maximum, flag=flag, const=const)  # fmt: skip
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    """batch_size -> --batch-size; a one-letter field is a short flag: k -> -k."""
    return "-" + name if len(name) == 1 else "--" + name.replace("_", "-")


def unwrap_optional(kind):
    """`int | None` -> int; anything else as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if type(None) in typing.get_args(kind) and len(args) == 1:
        return args[0]
    return kind


def weights(text: str) -> dict[str, float]:
    """An argparse type: NAME=NUMBER,NAME=NUMBER -> {NAME: NUMBER}."""
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not (sep and name.strip()):
            raise argparse.ArgumentTypeError(f"expected NAME=NUMBER[,NAME=NUMBER...], not {text!r}")
    return out


def names(text: str) -> dict[str, str]:
    """An argparse type: NAME=VALUE,NAME=VALUE -> {NAME: VALUE} (e.g. a=question,b=answer)."""
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not (sep and name.strip() and value.strip()) or name.strip() in out:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE...], not {text!r}")
        out[name.strip()] = value.strip()
    return out


def add_flags(parser: argparse.ArgumentParser, options: type) -> None:
    """One flag (or positional) per field of the dataclass `options`, and --config."""
    hints = typing.get_type_hints(options)
    for f in fields(options):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        kind = unwrap_optional(hints[f.name])
        text = meta["help"].replace("%", "%%")  # argparse formats help strings with %
        shown = f.default if f.default is not MISSING else None
        if meta["required"]:
            text += " (required)"
        elif shown not in (None, False):
            text += f" (default: {shown})"
        if meta["positional"]:
            parser.add_argument(f.name, nargs="?", default=None, help=text)
            continue
        if kind is bool:
            add_switch(parser, f.name, text)
            continue
        kwargs: dict = {"default": None, "help": text, "dest": f.name}
        if kind == list[str]:
            kwargs["action"] = "append"
        elif kind == dict[str, float]:
            kwargs["type"], kwargs["metavar"] = weights, "NAME=NUMBER,..."
        elif kind == dict[str, str]:
            kwargs["type"], kwargs["metavar"] = names, "NAME=VALUE,..."
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        else:
            kwargs["type"] = kind
        if meta.get("const") is not None:  # a value is optional: --ray, or --ray ADDRESS
            kwargs["nargs"], kwargs["const"] = "?", meta["const"]
        parser.add_argument(flag_name(f.name), **kwargs)
    parser.add_argument("--config", help="a TOML file setting any of these options by name")


def add_switch(parser: argparse.ArgumentParser, name: str, text: str) -> None:
    """--name and its opposite (--no-name; --eval for --no-eval), so that a flag wins over a
    config file's value either way; neither given leaves the field unset (None)."""
    opposite = name.removeprefix("no_") if name.startswith("no_") else f"no_{name}"
    group = parser.add_mutually_exclusive_group()
    text += f" ({flag_name(opposite)}: the opposite, over a config file's)"
    group.add_argument(flag_name(name), action="store_const", const=True, default=None,
                       dest=name, help=text)  # fmt: skip
    group.add_argument(flag_name(opposite), action="store_const", const=False, dest=name,
                       help=argparse.SUPPRESS)  # fmt: skip


def given(args: argparse.Namespace, options: type) -> dict:
    """The options the command line gave (a flag not given is None)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(options)}
    return {name: value for name, value in values.items() if value is not None}


def build(options: type, values: dict):
    """An instance of `options` from checked values: required ones present, numbers in range."""
    for f in fields(options):
        if f.metadata.get("required") and values.get(f.name) is None:
            if f.metadata.get("positional"):  # no flag to name: the argument and its help
                raise ConfigError(f"argument {f.name} ({f.metadata['help']}) is required")
            raise ConfigError(f"{flag_name(f.name)} is required")
    check_ranges(options, values)
    try:
        return options(**values)
    except TypeError as e:
        raise ConfigError(f"bad settings: {e}") from None


def check_ranges(options: type, values: dict) -> None:
    """Every number finite and within its field's minimum and maximum."""
    for f in fields(options):
        value, name = values.get(f.name), flag_name(f.name)
        if isinstance(value, float) and not math.isfinite(value):  # --grace-seconds inf
            raise ConfigError(f"{name} must be a finite number, not {value}")
        minimum, maximum = f.metadata.get("minimum"), f.metadata.get("maximum")
        if minimum is not None and value is not None and not value >= minimum:
            raise ConfigError(f"{name} must be at least {minimum}, not {value}")
        if maximum is not None and value is not None and not value <= maximum:
            raise ConfigError(f"{name} must be at most {maximum}, not {value}")


def from_args(options: type, args: argparse.Namespace):
    """Defaults, then the config file, then the flags given on the command line."""
    values = read_config(Path(args.config), options) if args.config else {}
    return build(options, {**values, **given(args, options)})


def read_toml(path: Path) -> dict:
    # Here, not at the top: a serving machine (requirements-serve.txt) has no TOML reader on
    # Python 3.10, and only a command given --config needs one.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package
        import tomli as tomllib

    try:  # a regular file of bounded size: not a FIFO, not a link to /dev/zero
        return tomllib.loads(read_bounded(path).decode("utf-8-sig"))  # a BOM, as in data files
    except CheckpointError as e:
        problem = "config file not found" if e.problem == "file not found" else e.problem
        raise ConfigError(f"{path}: {problem}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:  # nested deep
        raise ConfigError(f"{path}: unreadable config file ({e})") from None


def read_config(path: Path, options: type) -> dict:
    """A config file's settings for `options`, each checked against its field's type."""
    values = read_toml(path)
    check_table(values, options, f"{path}: ")
    return values


def check_table(table: dict, options: type, where: str) -> None:
    """Refuse unknown keys and values of the wrong type, naming the file (`where`)."""
    hints = typing.get_type_hints(options)
    unknown = sorted(set(table) - hints.keys())
    if unknown:
        raise ConfigError(f"{where}unknown setting(s) {', '.join(unknown)}")
    for name, value in table.items():
        if not fits(value, hints[name]):
            raise ConfigError(f"{where}{name} = {value!r} is not {describe(hints[name])}")


def fits(value, kind) -> bool:
    """Whether a config file's value has the type of its field."""
    kind = unwrap_optional(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            fits(k, args[0]) and fits(v, args[1]) for k, v in value.items()
        )
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def describe(kind, plural: bool = False) -> str:
    kind = unwrap_optional(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return "a list of " + describe(args[0], plural=True)
    if origin is dict:
        return f"a table of {describe(args[0], plural=True)} to {describe(args[1], plural=True)}"
    if kind is bool:
        return "true or false values" if plural else "true or false"
    names = {int: "whole number", float: "number", str: "string", dict: "table"}
    return names[kind] + "s" if plural else "a " + names[kind]


def finite(name: str, value: float, low: float = 0.0, above: bool = False) -> None:
    """Refuse a NaN, an infinity, or a number below `low` (at or below it with `above`)."""
    if not (math.isfinite(value) and (value > low if above else value >= low)):
        bound = f"above {low:g}" if above else f"{low:g} or more"
        raise ConfigError(f"{flag_name(name)} must be a number {bound}, not {value}")
