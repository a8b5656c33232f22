"""Checks shared by every merge (the bottom of alignlab.merge: it imports nothing else from the package).

alpha and scope are validated with a :class:`~alignlab.errors.ConfigError` naming the ``merge.*`` key; two models
whose tensors differ (names or shapes) raise :class:`MergeMismatchError` naming the first offending tensor.
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping

from alignlab.errors import ConfigError, UserError

__all__ = ["SCOPES", "MergeMismatchError", "check_alpha", "check_compatible", "check_scope", "shape_of"]

SCOPES = ("all", "linear")


class MergeMismatchError(UserError, ValueError):
    """The two models to merge do not have the same tensors (names or shapes)."""


def check_alpha(alpha, key: str = "merge.alpha") -> float:
    """alpha as a float in [0, 1] (the share of the aligned model), or a ConfigError naming `key`."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{key}={alpha!r} must be a number in [0, 1] (the share of the aligned model: "
                          f"1 = aligned, 0 = pre-alignment)")
    return float(alpha)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ConfigError(f"merge.scope={scope!r} is not one of {list(SCOPES)}")
    return scope


def shape_of(t) -> tuple[int, ...]:
    return tuple(t.shape) if hasattr(t, "shape") else tuple(t)


def check_compatible(pre_shapes: Mapping[str, tuple], aligned_shapes: Mapping[str, tuple],
                     pre_name: str = "pre", aligned_name: str = "aligned") -> None:
    """Same keys and shapes, or MergeMismatchError naming the first offending tensor (aligned order first)."""
    for key, shape in aligned_shapes.items():
        if key not in pre_shapes:
            raise MergeMismatchError(f"cannot merge: tensor {key!r} (shape {list(shape_of(shape))}) is in the "
                                     f"{aligned_name} model but not in the {pre_name} model")
        if shape_of(pre_shapes[key]) != shape_of(shape):
            raise MergeMismatchError(f"cannot merge: tensor {key!r} has shape {list(shape_of(pre_shapes[key]))} in the "
                                     f"{pre_name} model but {list(shape_of(shape))} in the {aligned_name} model")
    for key, shape in pre_shapes.items():
        if key not in aligned_shapes:
            raise MergeMismatchError(f"cannot merge: tensor {key!r} (shape {list(shape_of(shape))}) is in the "
                                     f"{pre_name} model but not in the {aligned_name} model")
