"""``python -m benchmarks``: the benchmark suite (see :mod:`benchmarks.suite.cli` and ``benchmarks/README.md``)."""

import sys

from benchmarks.suite.cli import main

sys.exit(main())
