"""ParameterRanges of a tuning job as an optuna search space, and sampled values as hyperparameter strings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from pipelines.local.errors import UnsupportedError

# Grid search enumerates integer ranges value by value; beyond this the grid is surely a mistake.
MAX_GRID_POINTS = 100_000


class RangeError(ValueError):
    """A range SageMaker itself would reject (the message says which and why)."""


@dataclass(frozen=True)
class Param:
    """One tuned hyperparameter: its optuna distribution and how a sample becomes the HP string."""

    name: str
    distribution: BaseDistribution
    kind: str  # "int", "float", "reverse-log" or "categorical"

    def to_hp(self, sampled: Any) -> str:
        """The hyperparameter value passed to the training job (always a string, as in the API)."""
        if self.kind == "int":
            return str(int(sampled))
        if self.kind == "float":
            return repr(float(sampled))
        if self.kind == "reverse-log":
            # Sampled as 1 - x on a log scale: dense near 1, as ReverseLogarithmic scaling is.
            return repr(1.0 - float(sampled))
        return str(sampled)


def _bounds(item: Mapping[str, Any], cast: type) -> tuple[Any, Any]:
    try:
        low, high = cast(item["MinValue"]), cast(item["MaxValue"])
    except (KeyError, ValueError) as exc:
        raise RangeError(f"range {item.get('Name')!r}: bad MinValue/MaxValue ({exc})") from exc
    if low > high:
        raise RangeError(f"range {item['Name']!r}: MinValue {low} > MaxValue {high}")
    return low, high


def search_space(ranges: Mapping[str, Any]) -> list[Param]:
    """Convert ParameterRanges (Integer/Continuous/Categorical; ScalingType Auto = Linear).

    Raises:
        RangeError: what SageMaker rejects (log scale over non-positive values, ReverseLogarithmic
            outside [0, 1) or on integers, no ranges at all).
        UnsupportedError: AutoParameters (Autotune) ranges.
    """
    if ranges.get("AutoParameters"):
        raise UnsupportedError("ParameterRanges.AutoParameters (Autotune) is not supported locally")
    params: list[Param] = []
    for item in ranges.get("IntegerParameterRanges", []):
        low, high = _bounds(item, int)
        scaling = item.get("ScalingType", "Auto")
        if scaling == "ReverseLogarithmic":
            raise RangeError(
                f"range {item['Name']!r}: ReverseLogarithmic scaling is for continuous ranges only"
            )
        if scaling == "Logarithmic" and low <= 0:
            raise RangeError(f"range {item['Name']!r}: Logarithmic scaling needs MinValue > 0")
        params.append(Param(item["Name"], IntDistribution(low, high, log=scaling == "Logarithmic"), "int"))
    for item in ranges.get("ContinuousParameterRanges", []):
        low, high = _bounds(item, float)
        scaling = item.get("ScalingType", "Auto")
        if scaling == "Logarithmic":
            if low <= 0:
                raise RangeError(f"range {item['Name']!r}: Logarithmic scaling needs MinValue > 0")
            params.append(Param(item["Name"], FloatDistribution(low, high, log=True), "float"))
        elif scaling == "ReverseLogarithmic":
            if low < 0 or high >= 1:
                raise RangeError(
                    f"range {item['Name']!r}: ReverseLogarithmic needs 0 <= MinValue, MaxValue < 1"
                )
            params.append(Param(item["Name"], FloatDistribution(1 - high, 1 - low, log=True), "reverse-log"))
        else:
            params.append(Param(item["Name"], FloatDistribution(low, high), "float"))
    for item in ranges.get("CategoricalParameterRanges", []):
        values = list(item.get("Values", []))
        if not values:
            raise RangeError(f"range {item.get('Name')!r}: no Values")
        params.append(Param(item["Name"], CategoricalDistribution(values), "categorical"))
    if not params:
        raise RangeError("ParameterRanges defines no hyperparameter to tune")
    names = [p.name for p in params]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RangeError(f"hyperparameter(s) in more than one range: {', '.join(duplicates)}")
    return params


def grid(params: list[Param]) -> dict[str, list[Any]]:
    """The Grid strategy's points per parameter (categorical values; every integer of a range).

    Raises:
        RangeError: a continuous range (SageMaker's Grid strategy accepts none) or a huge grid.
    """
    points: dict[str, list[Any]] = {}
    size = 1
    for param in params:
        dist = param.distribution
        if isinstance(dist, CategoricalDistribution):
            points[param.name] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            points[param.name] = list(range(dist.low, dist.high + 1))
        else:
            raise RangeError(f"Grid strategy does not accept continuous range {param.name!r}")
        size *= len(points[param.name])
        if size > MAX_GRID_POINTS:
            raise RangeError(f"grid has more than {MAX_GRID_POINTS} points")
    return points
