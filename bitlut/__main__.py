import sys

from bitlut.cli import main

sys.exit(main())
