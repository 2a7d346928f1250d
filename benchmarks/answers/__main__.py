"""``python -m benchmarks.answers``."""

import sys

from benchmarks.answers.cli import main

sys.exit(main())
