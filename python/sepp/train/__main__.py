"""``python -m sepp.train`` (also ``torchrun ... -m sepp.train``): runs :func:`sepp.train.main`."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
