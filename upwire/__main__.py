"""`python -m upwire` runs the `upwire` command."""

import sys

from upwire.cli import main

sys.exit(main())
