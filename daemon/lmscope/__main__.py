"""`python -m lmscope` is the `lmscope` command."""

import sys

from lmscope.cli import main

sys.exit(main())
