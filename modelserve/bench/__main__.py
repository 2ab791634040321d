"""``python -m modelserve.bench``: the same as ``modelserve bench``."""

import sys

from . import main

sys.exit(main())
