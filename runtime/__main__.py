"""`python -m runtime ...` == `mambacsr-rt ...`."""
import sys

from runtime.cli import main

sys.exit(main())
