"""`python -m autograder.cli ...`: the same as `dlopt ...`."""

import sys

from .commands import main

sys.exit(main())
