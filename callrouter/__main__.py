"""``python -m callrouter`` is the ``callrouter`` command."""

import sys

from callrouter.cli import main

sys.exit(main())
