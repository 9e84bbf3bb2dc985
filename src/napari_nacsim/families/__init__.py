"""The model-family registry: the one place where what differs between families lives.

``get_family("breast")`` returns the breast NAC family, ``family_names()`` lists every
registered family (CLI choices, widget lists and training entrypoints read it), and
``register_family(MyFamily())`` adds one — a third family needs a `ModelFamily` subclass
and this call, nothing else (see `base` and docs/families.md).

The built-in families register when this package is imported: `breast` (NAC simulation,
DCE-MRI MIPs) and `lung` (ImmunoDiff, CT crops).
"""

from __future__ import annotations

from typing import Union

from ..core.errors import InputError
from ..core.schema import FamilySchema, register_schema, unregister_schema
from .base import Comparison, ModelFamily, ModelInput, SegmentationSpec, WindowPreset

_REGISTRY: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily, *, replace: bool = False) -> ModelFamily:
    """Add ``family`` to the registry (``replace`` an earlier one of the same name)."""
    if not family.name or family.name != family.schema.name:
        raise ValueError(f"family name {family.name!r} must equal its schema's name "
                         f"{family.schema.name!r}")
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise ValueError(f"a model family {family.name!r} is already registered")
    _REGISTRY[family.name] = family
    register_schema(family.schema)  # core reads schemas by name, never the families
    return family


def unregister_family(name: str) -> None:
    if _REGISTRY.pop(name, None) is not None:
        unregister_schema(name)


def family_names() -> list[str]:
    return list(_REGISTRY)


def get_family(family: Union[str, FamilySchema, ModelFamily]) -> ModelFamily:
    """The registered family of a name (or of a schema); a clear error for unknown ones."""
    if isinstance(family, ModelFamily):
        return family
    name = family.name if isinstance(family, FamilySchema) else str(family)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError("family", f"{name!r} is not a model family "
                                   f"(known: {', '.join(_REGISTRY)})") from None


def _register_builtin() -> None:
    from .breast import BreastFamily
    from .lung import LungFamily

    for family in (BreastFamily(), LungFamily()):
        register_family(family, replace=True)


_register_builtin()

__all__ = ["Comparison", "ModelFamily", "ModelInput", "SegmentationSpec", "family_names",
           "get_family", "register_family", "unregister_family", "WindowPreset"]
