"""`python -m fer_client ...`: see fer_client.cli."""

from fer_client.cli import main

raise SystemExit(main())
