"""`python -m energybench <command> ...`: the same as the `energybench` command (energybench.cli)."""

import sys

from energybench.cli import main

sys.exit(main())
