"""Model Monitor for the endpoint: data-quality baselines, monitoring schedules, local checks."""
