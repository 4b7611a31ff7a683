"""`python -m vist_rt` is the `vist-rt` command."""

import sys

from vist_rt.cli import main

sys.exit(main())
