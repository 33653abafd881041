"""`python -m portal.server.cli`: the same as the `testimony-portal` command."""

import sys

from portal.server.cli import main

sys.exit(main())
