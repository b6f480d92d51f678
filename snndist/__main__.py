import sys

from snndist.cli import main

sys.exit(main())
