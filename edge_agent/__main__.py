"""`python -m edge_agent`: the same command as `edge-agent`."""

import sys

from edge_agent.cli import main

sys.exit(main())
