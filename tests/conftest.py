"""Test-wide settings: offline hubs, deterministic seeds, few threads on the 2-core CI machine."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
