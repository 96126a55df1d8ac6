"""``python -m florence_tune`` is the same as the ``florence-tune`` command."""

import sys

from florence_tune.cli import main

sys.exit(main())
