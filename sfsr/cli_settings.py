"""A job's command line derived from its settings dataclass, so each setting is written once.

The settings are the fields of a frozen dataclass; every field is declared with `setting(...)`,
which puts its help text (and whatever else the command line needs) in the field's metadata:

    @dataclass(frozen=True, kw_only=True)
    class IngestConfig:
        output: str = setting("output folder or s3:// prefix", required=True)
        crop_size: int = setting("side of the aligned crops", 256)

    parser = settings_parser(IngestConfig, __doc__, smoke_test="tiny run")  # --smoke-test: a flag, not a setting
    cfg, args = parse_settings(IngestConfig, parser, argv)  # args.smoke_test

How a field becomes a flag (the dest is always the field's name, so `vars(args)` matches it):
  name        batch_size -> --batch-size, unless `flag` names another (--no-pose for `pose`)
  type        int / float (or `int | None`) convert; str does not; bool is store_true, or
              store_false when its default is True; tuple[str, ...] is one comma-separated
              value, or one value per repeated flag with action="append"
  default     the field's default (None when it has none), shown in --help; with `env`, the
              environment variable's value when it is set
  required    argparse refuses a missing flag; with `env` or `unless` (--smoke-test)
              parse_settings does, after parsing, naming the flag
  one_of      fields with the same one_of name are mutually exclusive; the group is required
              when its fields are
No Ray: unit tests build and parse these parsers directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
_KEY = "cli_setting"


def setting(
    help: str,
    default: Any = dataclasses.MISSING,
    *,
    flag: str | None = None,  # noqa: A002
    choices: typing.Sequence[str] | None = None,
    action: str | None = None,
    env: str | None = None,
    required: bool = False,
    unless: str | None = None,
    one_of: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring)."""
    spec = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "action": action,
        "env": env,
        "required": required,
        "unless": unless,
        "one_of": one_of,
    }
    return dataclasses.field(default=default, metadata={_KEY: spec})


def _spec(cls: type, field: dataclasses.Field) -> dict:
    if _KEY not in field.metadata:
        raise TypeError(
            f"{cls.__name__}.{field.name} is a plain field; declare it with sfsr.cli_settings.setting(help, "
            "default) so its flag has help text"
        )
    return field.metadata[_KEY]


def _flag(field: dataclasses.Field, spec: dict) -> str:
    return spec["flag"] or "--" + field.name.replace("_", "-")


def _comma_separated(value: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'); empty items are dropped, so '' is ()."""
    return tuple(s for s in value.split(",") if s)


def _argument(cls: type, field: dataclasses.Field, hint: Any, spec: dict) -> dict:
    """add_argument's keyword arguments for one field."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):  # X | None -> X
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else hint
    default = None if field.default is dataclasses.MISSING else field.default
    if spec["env"]:
        default = os.environ.get(spec["env"]) or default  # argparse converts a string default with `type`
    kw: dict[str, Any] = {"dest": field.name, "help": spec["help"], "default": default}
    if spec["choices"] is not None:
        kw["choices"] = spec["choices"]
    if spec["required"] and not (spec["env"] or spec["unless"] or spec["one_of"]):
        kw["required"] = True
    if hint is bool:
        kw["action"] = spec["action"] or ("store_false" if default else "store_true")
    elif typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        if spec["action"] == "append":
            kw.update(action="append", default=list(default or ()))
        else:
            kw.update(type=_comma_separated, default=",".join(default or ()))
    elif hint in (int, float, str):
        if hint is not str:
            kw["type"] = hint
        if spec["action"]:
            kw["action"] = spec["action"]
    else:
        raise TypeError(
            f"{cls.__name__}.{field.name}: type {hint} has no command-line form; use str, int, float, "
            "bool, tuple[str, ...] or one of them | None"
        )
    return kw


def settings_parser(
    cls: type, description: str | None = None, *, smoke_test: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of dataclass `cls`, in field order, defaults
    shown; with `smoke_test` (its help text) a last flag --smoke-test, which every job has."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for field in dataclasses.fields(cls):
        spec = _spec(cls, field)
        target: Any = parser
        if spec["one_of"]:
            if spec["one_of"] not in groups:
                groups[spec["one_of"]] = parser.add_mutually_exclusive_group(required=spec["required"])
            target = groups[spec["one_of"]]
        target.add_argument(_flag(field, spec), **_argument(cls, field, hints[field.name], spec))
    if smoke_test is not None:
        parser.add_argument("--smoke-test", action="store_true", help=smoke_test)
    return parser


def parse_settings(
    cls: type[T], parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> tuple[T, argparse.Namespace]:
    """(the settings, the whole namespace, with any flags that are not settings) from `argv`.
    A required setting that argparse could not check (it has an env default, or `unless`) and
    is still missing exits with a usage error naming its flag."""
    args = parser.parse_args(argv)
    for field in dataclasses.fields(cls):
        spec = _spec(cls, field)
        if not spec["required"] or spec["one_of"] or getattr(args, field.name) not in (None, ""):
            continue
        if spec["unless"] and getattr(args, spec["unless"].lstrip("-").replace("-", "_")):
            continue
        parser.error(
            f"{_flag(field, spec)} is required"
            + (f" (or set {spec['env']})" if spec["env"] else "")
            + (f", unless {spec['unless']}" if spec["unless"] else "")
            + f": {spec['help']}"
        )
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}  # action="append"
    return cls(**values), args
