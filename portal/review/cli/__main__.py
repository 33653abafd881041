"""`python -m portal.review.cli`: the same as the `testimony-review` console script."""

import sys

from portal.review.cli import main

sys.exit(main())
