import sys

from kpr.cli import main

sys.exit(main())
