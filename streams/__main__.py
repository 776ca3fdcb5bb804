"""`python -m streams`: the `kudos` command."""

import sys

from streams.entry import main

sys.exit(main())
