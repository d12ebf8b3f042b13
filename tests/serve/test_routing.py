"""Weighted variant routing (A/B traffic split) and the per-variant counters A/B reports read."""

from __future__ import annotations

import math
import random
from collections import Counter

import httpx

from deploy.serve.metrics import variant_counts
from deploy.serve.models import Variant, Variants
from tests.serve.serve_helpers import RECORD, WEIGHTS, csv_line

REQUESTS = 400


def test_traffic_follows_variant_weights(client: httpx.Client) -> None:
    before = variant_counts(client.get("/metrics").text)
    seen: Counter[str] = Counter()
    for _ in range(REQUESTS):
        response = client.post("/invocations", content=csv_line(RECORD), headers={"content-type": "text/csv"})
        assert response.status_code == 200
        seen[response.headers["x-amzn-invoked-production-variant"]] += 1
    assert seen["Zero"] == 0, "a zero-weight variant only answers when targeted"
    total = sum(WEIGHTS.values())
    for name in ("A", "B"):
        p = WEIGHTS[name] / total
        # 5 standard deviations of the binomial: fails for a wrong split, not by chance.
        assert abs(seen[name] - REQUESTS * p) <= 5 * math.sqrt(REQUESTS * p * (1 - p)), seen
    after = variant_counts(client.get("/metrics").text)
    for name in ("A", "B", "Zero"):
        assert after[name]["invocations"] - before[name]["invocations"] == seen[name]


def test_variants_pick_in_proportion_in_process() -> None:
    variants = Variants(
        [Variant("A", 1.0, None, b"A"), Variant("B", 0.0, None, b"B"), Variant("C", 3.0, None, b"C")],
        random.Random(3),
    )
    picks = Counter(variants.pick().name for _ in range(20_000))
    assert picks["B"] == 0
    assert abs(picks["C"] / 20_000 - 0.75) < 0.02
