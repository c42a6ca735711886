"""`python -m cli ...` is the `maskgan` command."""

import sys

from cli.main import main

sys.exit(main())
