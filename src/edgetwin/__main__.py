import sys

from edgetwin.cli import main

sys.exit(main())
