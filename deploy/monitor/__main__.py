"""`python -m deploy.monitor` (see deploy/monitor/cli.py)."""

import sys

from deploy.monitor.cli import main

sys.exit(main())
