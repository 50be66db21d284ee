"""`python -m moments_client.cli ARGS`: the `moments` command."""

import sys

from moments_client.cli import main

sys.exit(main())
