"""Data classification of events from their findings and policy flags.

The rules live in a versioned YAML policy (``transforms/policy/classification.yaml``, documented
in the README); this module only loads and applies it. The class of an event is the highest of
its base class (no text: ``no_text_class``, else ``default_class``), the class of each info type
found, and the class of each policy flag. Findings not in the policy fail safe.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import yaml

__all__ = ["DEFAULT_POLICY_PATH", "ClassificationPolicy", "classify", "load_policy"]

DEFAULT_POLICY_PATH = "builtin:classification.yaml"


class ClassificationPolicy(NamedTuple):
    version: str
    classes: tuple[str, ...]
    no_text_class: str
    default_class: str
    unlisted_info_type: str
    unlisted_policy_flag: str
    info_types: Mapping[str, str]
    policy_flags: Mapping[str, str]


def _read(path: str) -> str:
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        return resources.files("transforms").joinpath("policy", name).read_text("utf-8")
    return Path(path).read_text("utf-8")


def load_policy(path: str = DEFAULT_POLICY_PATH) -> ClassificationPolicy:
    """Loads and checks a policy file (``builtin:NAME`` for the packaged ones).

    Raises ValueError when a rule names a class that is not in ``classes``. The file is read
    on every call; its parsing is cached per content (the local runners set a DoFn up for
    every bundle, and parsing YAML took 4% of a local stream's CPU).
    """
    policy = _parse(_read(path), path)
    return policy._replace(
        info_types=dict(policy.info_types), policy_flags=dict(policy.policy_flags)
    )


@functools.lru_cache(maxsize=8)
def _parse(text: str, path: str) -> ClassificationPolicy:
    raw = yaml.safe_load(text)
    policy = ClassificationPolicy(
        version=str(raw["version"]),
        classes=tuple(raw["classes"]),
        no_text_class=raw["no_text_class"],
        default_class=raw["default_class"],
        unlisted_info_type=raw["unlisted_info_type"],
        unlisted_policy_flag=raw["unlisted_policy_flag"],
        info_types=dict(raw.get("info_types") or {}),
        policy_flags=dict(raw.get("policy_flags") or {}),
    )
    used = {
        policy.no_text_class,
        policy.default_class,
        policy.unlisted_info_type,
        policy.unlisted_policy_flag,
        *policy.info_types.values(),
        *policy.policy_flags.values(),
    }
    unknown = used - set(policy.classes)
    if unknown:
        raise ValueError(f"policy {path}: classes {sorted(unknown)} are not in {policy.classes}")
    return policy


def classify(
    policy: ClassificationPolicy,
    *,
    has_text: bool,
    info_types: Iterable[str],
    policy_flags: Iterable[str],
) -> str:
    """Returns the data class of an event (one of ``policy.classes``)."""
    rank = {name: i for i, name in enumerate(policy.classes)}
    best = policy.default_class if has_text else policy.no_text_class
    for info_type in info_types:
        candidate = policy.info_types.get(info_type, policy.unlisted_info_type)
        if rank[candidate] > rank[best]:
            best = candidate
    for flag in policy_flags:
        candidate = policy.policy_flags.get(flag, policy.unlisted_policy_flag)
        if rank[candidate] > rank[best]:
            best = candidate
    return best
