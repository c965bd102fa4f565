"""`python -m edge_agent`: the same command as `edge-agent`."""

import sys

from edge_agent.cli.main import main

sys.exit(main())
