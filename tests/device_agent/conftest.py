"""Fixtures for the device-agent tests; ``fake_sysfs`` sits beside this file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # `import fake_sysfs` under any import mode

from fake_sysfs import world_tmp  # noqa: E402, F401  (a fixture)
