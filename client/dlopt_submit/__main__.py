"""`python -m dlopt_submit ...`: the same as the `dlopt-submit` command."""

import sys

from dlopt_submit.cli import main

sys.exit(main())
