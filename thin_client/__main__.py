"""`python -m thin_client` is `cloudseat-client`."""

import sys

from thin_client.cli import main

sys.exit(main())
