"""Suite-wide settings. Hypothesis profiles: `default` keeps the suite fast; `thorough`
is for hunting bugs (HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py)."""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=40, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The suite's tensors are tiny: one thread per test process is faster than two that
# wait on each other (on a 2-core CI machine, 10x faster under load). Subprocesses a
# test starts choose their own threads.
import torch  # noqa: E402

torch.set_num_threads(1)
