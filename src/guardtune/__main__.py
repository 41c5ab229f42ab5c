import sys

from guardtune.cli import main

sys.exit(main())
