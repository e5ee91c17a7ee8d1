import sys

from cutedge.cli import main

sys.exit(main())
