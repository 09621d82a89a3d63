import sys

from gpu_agent.cli import main

sys.exit(main())
