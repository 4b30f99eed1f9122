"""Secret settings: found by type, read from the environment, never written back out.

A setting typed ``SecretStr`` prints as ``**********`` (``streamrec config``, logs, JSON dumps) and
is left out of ``to_overrides``. It reaches another process through its environment, never its
command line (``/proc/<pid>/cmdline`` and ``ps`` show a command line to every user on the host;
``/proc/<pid>/environ`` only to the process's own user): each secret has a variable named after
its dotted path, ``kafka.security.password`` -> ``STREAMREC_KAFKA__SECURITY__PASSWORD``, which
``load_config`` reads.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

ENV_PREFIX = "STREAMREC_"


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_secret(a) for a in typing.get_args(annotation))
    return False


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def secret_paths(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """Dotted paths of every ``SecretStr`` field under ``model``, e.g. [("kafka", "security", "password")]."""

    def walk(m: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for name, f in m.model_fields.items():
            if _is_secret(f.annotation):
                yield (*prefix, name)
            elif (sub := _section_of(f.annotation)) is not None:
                yield from walk(sub, (*prefix, name))

    return list(walk(model, ()))


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def apply_env(model: type[BaseModel], data: dict[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Set each secret of ``data`` (raw config, before validation) whose variable is in ``env``."""
    env = os.environ if env is None else env
    for path in secret_paths(model):
        value = env.get(env_name(path))
        if value is None:
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value


def secret_env(settings: BaseModel) -> dict[str, str]:
    """The variables that carry ``settings``' secrets to a child process (only those that are set)."""
    out = {}
    for path in secret_paths(type(settings)):
        value: Any = settings
        for part in path:
            value = getattr(value, part, None)
        if isinstance(value, SecretStr):
            out[env_name(path)] = value.get_secret_value()
    return out


def child_env(settings: BaseModel, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process: ``base`` (default: this one) plus the secrets."""
    return {**(os.environ if base is None else base), **secret_env(settings)}


def holds_secret(model: type[BaseModel], key: list[str], value: Any) -> bool:
    """True if the override ``key=value`` (a parsed ``--set``) sets a secret: the field itself, or a
    section given as an inline table that contains it."""
    for path in secret_paths(model):
        if tuple(key) == path:
            return True
        if tuple(key) == path[: len(key)]:
            node = value
            for part in path[len(key):]:
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            else:
                return True
    return False
