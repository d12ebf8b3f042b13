"""Model Monitor's data-quality files computed locally: statistics.json, constraints.json, violations.

The JSON shapes are those of SageMaker Model Monitor's analyzer ("Schema for Statistics", "Schema for
Constraints", "Schema for Violations" in the developer guide), so a baseline made here is readable by a
schedule on AWS and a report made here reads like one from a monitoring execution. Values are kept as
strings until a type is inferred, as the analyzer does with CSV: "12" is Integral, "12.5" Fractional.

Where the analyzer's exact algorithm is not documented the choice made here is stated:
- the KLL sketch is stored as one level of up to `SKETCH_K` equally weighted quantiles (exact when the data
  has no more rows), which is what the drift distance reads back;
- `baseline_drift_check` for numbers is the L-infinity distance between the baseline's and the current
  empirical CDFs (the Kolmogorov-Smirnov statistic); `Robust` also asks that it exceed the KS test's critical
  value at 99% confidence, so a small sample does not raise a false alarm; for strings it is the L-infinity
  distance between the category frequencies (`LInfinity`), or a chi-squared test (`ChiSquared`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

INTEGRAL, FRACTIONAL, STRING = "Integral", "Fractional", "String"
SKETCH_K = 2048
SKETCH_C = 0.64
HISTOGRAM_BUCKETS = 10
# A string feature with at most this many distinct values gets a `domains` constraint.
MAX_DOMAIN_SIZE = 20
# The analyzer's defaults in a suggested constraints.json.
DEFAULT_MONITORING_CONFIG: dict[str, Any] = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 1.0,
    "domain_content_threshold": 1.0,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "LInfinity",
    },
}
# Kolmogorov-Smirnov c(alpha) for alpha = 0.01 (two-sample, asymptotic).
_KS_C_99 = 1.628
_INT_PATTERN = r"^[+-]?\d+$"


class StatisticsError(ValueError):
    """Data that cannot be profiled or compared (no rows, unreadable baseline)."""


# --- profiling ---------------------------------------------------------------------------------------
def _kinds(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(present, integral, numeric) masks of a column of strings."""
    text = values.astype("string").str.strip()
    present = text.notna() & (text != "")
    integral = present & text.str.fullmatch(_INT_PATTERN).fillna(False).astype(bool)
    numeric = present & pd.to_numeric(text.where(present), errors="coerce").notna()
    return present, integral, numeric


def infer_type(values: pd.Series) -> str:
    """Integral if every present value is an integer, Fractional if every one is a number, else String."""
    present, integral, numeric = _kinds(values)
    if not present.any():
        return STRING
    if integral[present].all():
        return INTEGRAL
    if numeric[present].all():
        return FRACTIONAL
    return STRING


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce").dropna().to_numpy(float)


def _sketch(numbers: np.ndarray) -> list[float]:
    """Up to SKETCH_K quantiles of the data (all of it, sorted, when it is that small)."""
    ordered = np.sort(numbers)
    if len(ordered) <= SKETCH_K:
        return ordered.tolist()
    positions = (np.arange(SKETCH_K) + 0.5) / SKETCH_K
    return np.quantile(ordered, positions, method="inverted_cdf").tolist()


def _histogram(numbers: np.ndarray) -> list[dict[str, float]]:
    low, high = float(numbers.min()), float(numbers.max())
    if low == high:
        return [{"lower_bound": low, "upper_bound": high, "count": float(len(numbers))}]
    counts, edges = np.histogram(numbers, bins=HISTOGRAM_BUCKETS, range=(low, high))
    return [
        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
        for i in range(len(counts))
    ]


def feature_statistics(name: str, values: pd.Series, inferred_type: str | None = None) -> dict[str, Any]:
    """One `features[]` entry of statistics.json; `inferred_type` forces the baseline's type on new data."""
    kind = inferred_type or infer_type(values)
    present, _, numeric = _kinds(values)
    common = {"num_present": int(present.sum()), "num_missing": int((~present).sum())}
    entry: dict[str, Any] = {"name": name, "inferred_type": kind}
    if kind in (INTEGRAL, FRACTIONAL):
        numbers = _numbers(values[numeric])
        stats: dict[str, Any] = {"common": common}
        if len(numbers):
            stats |= {
                "mean": float(numbers.mean()),
                "sum": float(numbers.sum()),
                "std_dev": float(numbers.std(ddof=0)),
                "min": float(numbers.min()),
                "max": float(numbers.max()),
                "distribution": {
                    "kll": {
                        "buckets": _histogram(numbers),
                        "sketch": {
                            "parameters": {"c": SKETCH_C, "k": float(SKETCH_K)},
                            "data": [_sketch(numbers)],
                        },
                    }
                },
            }
        entry["numerical_statistics"] = stats
        return entry
    counts = values[present].astype(str).str.strip().value_counts(sort=False)
    entry["string_statistics"] = {
        "common": common,
        "distinct_count": float(len(counts)),
        "distribution": {
            "categorical": {
                "buckets": [{"value": str(v), "count": float(c)} for v, c in sorted(counts.items())]
            }
        },
    }
    return entry


def statistics(frame: pd.DataFrame, types: dict[str, str] | None = None) -> dict[str, Any]:
    """statistics.json of a frame of strings (one column per feature, in order).

    Raises:
        StatisticsError: the frame has no rows (the analyzer fails such a job too).
    """
    if frame.empty:
        raise StatisticsError("the data set has no rows")
    types = types or {}
    return {
        "version": 0.0,
        "dataset": {"item_count": len(frame)},
        "features": [feature_statistics(str(c), frame[c], types.get(str(c))) for c in frame.columns],
    }


def suggest_constraints(stats: dict[str, Any]) -> dict[str, Any]:
    """constraints.json suggested from baseline statistics, as the analyzer's baselining job does."""
    features = []
    items = float(stats["dataset"]["item_count"])
    for feature in stats["features"]:
        kind = feature["inferred_type"]
        block = feature.get("numerical_statistics") or feature.get("string_statistics") or {}
        present = float(block.get("common", {}).get("num_present", 0))
        entry: dict[str, Any] = {
            "name": feature["name"],
            "inferred_type": kind,
            "completeness": present / items if items else 0.0,
        }
        if kind in (INTEGRAL, FRACTIONAL) and "min" in block:
            entry["num_constraints"] = {"is_non_negative": block["min"] >= 0}
        elif kind == STRING:
            buckets = block.get("distribution", {}).get("categorical", {}).get("buckets", [])
            if 0 < len(buckets) <= MAX_DOMAIN_SIZE:
                entry["string_constraints"] = {"domains": [b["value"] for b in buckets]}
        features.append(entry)
    return {"version": 0.0, "features": features, "monitoring_config": DEFAULT_MONITORING_CONFIG}


# --- comparison ------------------------------------------------------------------------------------
def ks_distance(baseline: Sequence[float], current: Sequence[float]) -> float:
    """L-infinity distance between two empirical CDFs (each sample equally weighted)."""
    base, cur = np.sort(np.asarray(baseline, float)), np.sort(np.asarray(current, float))
    if not len(base) or not len(cur):
        return 0.0
    points = np.union1d(base, cur)
    cdf_base = np.searchsorted(base, points, side="right") / len(base)
    cdf_cur = np.searchsorted(cur, points, side="right") / len(cur)
    return float(np.max(np.abs(cdf_base - cdf_cur)))


def linf_distance(baseline: dict[str, float], current: dict[str, float]) -> float:
    """L-infinity distance between two category frequency distributions."""
    base_total, cur_total = sum(baseline.values()), sum(current.values())
    if not base_total or not cur_total:
        return 0.0
    keys = set(baseline) | set(current)
    return max(abs(baseline.get(k, 0.0) / base_total - current.get(k, 0.0) / cur_total) for k in keys)


def _chi_squared_p(baseline: dict[str, float], current: dict[str, float]) -> float:
    from scipy.stats import chisquare

    keys = sorted(set(baseline) | set(current))
    total_base, total_cur = sum(baseline.values()), sum(current.values())
    # Laplace smoothing: a category new in the current data must not make the expectation zero.
    expected = np.array([(baseline.get(k, 0.0) + 1) for k in keys])
    expected = expected / expected.sum() * total_cur
    observed = np.array([current.get(k, 0.0) for k in keys])
    return float(chisquare(observed, expected).pvalue) if total_base and total_cur else 1.0


def _violation(name: str, check: str, description: str) -> dict[str, str]:
    return {"feature_name": name, "constraint_check_type": check, "description": description}


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def compare(
    baseline_stats: dict[str, Any], constraints: dict[str, Any], current: pd.DataFrame
) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, float]]:
    """Profile `current` (columns named by position after the baseline) and check it.

    Returns:
        (statistics.json of the current data, violations[], metrics) where metrics are the CloudWatch
        values a monitoring execution emits: `feature_baseline_drift_<f>` and `feature_non_null_<f>`.
    """
    base_features = {f["name"]: f for f in baseline_stats["features"]}
    wanted = [f["name"] for f in constraints["features"]]
    violations: list[dict[str, str]] = []
    if current.shape[1] < len(wanted):
        for name in wanted[current.shape[1] :]:
            violations.append(
                _violation(
                    name,
                    "missing_column_check",
                    f"There are missing columns in current dataset. "
                    f"Number of columns in current dataset: {current.shape[1]}, "
                    f"Number of columns in baseline constraints: {len(wanted)}",
                )
            )
    elif current.shape[1] > len(wanted):
        violations.append(
            _violation(
                "",
                "extra_column_check",
                f"There are extra columns in current dataset. "
                f"Number of columns in current dataset: {current.shape[1]}, "
                f"Number of columns in baseline constraints: {len(wanted)}",
            )
        )
    present_names = wanted[: current.shape[1]]
    frame = current.iloc[:, : len(present_names)].copy()
    frame.columns = present_names
    config = _merged_config(constraints.get("monitoring_config", {}))
    types = {c["name"]: c["inferred_type"] for c in constraints["features"]}
    current_stats = statistics(frame, types)
    metrics: dict[str, float] = {}
    for rule, stats in zip(constraints["features"], current_stats["features"], strict=False):
        name = rule["name"]
        violations.extend(_check_feature(rule, stats, frame[name], base_features.get(name), config, metrics))
    return current_stats, violations, metrics


def _merged_config(config: dict[str, Any]) -> dict[str, Any]:
    merged = dict(DEFAULT_MONITORING_CONFIG) | config
    merged["distribution_constraints"] = dict(DEFAULT_MONITORING_CONFIG["distribution_constraints"]) | (
        config.get("distribution_constraints") or {}
    )
    return merged


def _check_feature(
    rule: dict[str, Any],
    stats: dict[str, Any],
    values: pd.Series,
    base: dict[str, Any] | None,
    config: dict[str, Any],
    metrics: dict[str, float],
) -> list[dict[str, str]]:
    name, kind = rule["name"], rule["inferred_type"]
    out: list[dict[str, str]] = []
    present, integral, numeric = _kinds(values)
    n_present = int(present.sum())
    completeness = n_present / len(values) if len(values) else 0.0
    metrics[f"feature_non_null_{name}"] = completeness
    if completeness < float(rule.get("completeness", 1.0)):
        out.append(
            _violation(
                name,
                "completeness_check",
                f"Data completeness requirement is not met. Expected "
                f"completeness: {_pct(float(rule.get('completeness', 1.0)))}. Observed: Only "
                f"{_pct(completeness)} of data is complete.",
            )
        )
    threshold = float(config["datatype_check_threshold"])
    if kind in (INTEGRAL, FRACTIONAL) and n_present:
        matching = integral if kind == INTEGRAL else numeric
        share = float(matching[present].mean())
        if share < threshold:
            out.append(
                _violation(
                    name,
                    "data_type_check",
                    f"Data type match requirement is not met. Expected "
                    f"data type: {kind}, Expected match: {_pct(threshold)}. Observed: Only {_pct(share)} of "
                    f"data is {kind}.",
                )
            )
    domains = rule.get("string_constraints", {}).get("domains")
    if kind == STRING and domains and n_present:
        inside = float(values[present].astype(str).str.strip().isin(domains).mean())
        wanted = float(config["domain_content_threshold"])
        if inside < wanted:
            out.append(
                _violation(
                    name,
                    "categorical_values_check",
                    "Data does not meet the domain content requirement. "
                    f"Expected: {_pct(wanted)} of values in {domains}. Observed: {_pct(inside)}.",
                )
            )
    drift = _drift(kind, stats, values[present], base, config["distribution_constraints"], n_present)
    if drift is not None:
        distance, exceeded, threshold_used = drift
        metrics[f"feature_baseline_drift_{name}"] = distance
        if exceeded:
            out.append(
                _violation(
                    name,
                    "baseline_drift_check",
                    f"Baseline drift distance: {distance:.6g} exceeds threshold: {threshold_used:g}",
                )
            )
    return out


def _drift(
    kind: str,
    stats: dict[str, Any],
    values: pd.Series,
    base: dict[str, Any] | None,
    rules: dict[str, Any],
    n_present: int,
) -> tuple[float, bool, float] | None:
    """(distance, violated, threshold) for one feature, or None when there is nothing to compare."""
    if base is None or not n_present or rules.get("perform_comparison", "Enabled") != "Enabled":
        return None
    if kind in (INTEGRAL, FRACTIONAL):
        block = base.get("numerical_statistics", {})
        sketch = block.get("distribution", {}).get("kll", {}).get("sketch", {}).get("data") or []
        baseline_values = [v for level in sketch for v in level]
        if not baseline_values:
            return None
        current_values = _numbers(values)
        if not len(current_values):
            return None
        distance = ks_distance(baseline_values, current_values)
        threshold = float(rules["comparison_threshold"])
        exceeded = distance > threshold
        if exceeded and rules.get("comparison_method") == "Robust":
            n = float(block.get("common", {}).get("num_present") or len(baseline_values))
            m = float(len(current_values))
            exceeded = distance > _KS_C_99 * math.sqrt((n + m) / (n * m))
        return distance, exceeded, threshold
    base_buckets = base.get("string_statistics", {}).get("distribution", {}).get("categorical", {})
    base_counts = {b["value"]: float(b["count"]) for b in base_buckets.get("buckets", [])}
    cur_buckets = stats.get("string_statistics", {}).get("distribution", {}).get("categorical", {})
    cur_counts = {b["value"]: float(b["count"]) for b in cur_buckets.get("buckets", [])}
    if not base_counts or not cur_counts:
        return None
    threshold = float(rules["categorical_comparison_threshold"])
    distance = linf_distance(base_counts, cur_counts)
    if rules.get("categorical_drift_method") == "ChiSquared":
        # The p-value is the reported quantity; the drift is significant below the threshold.
        p_value = _chi_squared_p(base_counts, cur_counts)
        return p_value, p_value < threshold, threshold
    return distance, distance > threshold, threshold
