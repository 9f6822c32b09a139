"""``python -m facexai``: see :mod:`facexai.cli`."""

import sys

from facexai.cli import main

sys.exit(main())
