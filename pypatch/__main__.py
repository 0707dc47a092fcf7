import sys

from pypatch.cli import main

sys.exit(main())
