"""Hypothesis profiles for the property suite.

``dev`` (the default) keeps the whole suite to well under a minute; ``ci`` draws far more
examples. Pick one with the environment variable ``HYPOTHESIS_PROFILE=dev|ci``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large),
    "print_blob": True,
}
settings.register_profile("dev", max_examples=60, **_COMMON)
settings.register_profile("ci", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
