"""When the Spark tests may be skipped: only where Java is missing *and* this is not CI.

CI installs Java in ``.ci/run`` (Debian's default-jre-headless); there a missing Java must fail
the Spark test, never skip it silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping

CI_VALUES = frozenset({"true", "1", "yes"})


def spark_unavailable_reason(
    which: Callable[[str], str | None] = shutil.which, environ: Mapping[str, str] | None = None
) -> str | None:
    env = os.environ if environ is None else environ
    if which("java") is None and env.get("CI", "").strip().lower() not in CI_VALUES:
        return "Spark needs Java (Debian: default-jre-headless, which .ci/run installs) and CI is not set"
    return None
