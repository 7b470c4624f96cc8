"""``python -m fermodels``: see ``fermodels.cli``."""

import sys

from fermodels.cli import main

if __name__ == "__main__":
    sys.exit(main())
