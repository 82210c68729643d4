import sys

from jaxprop.cli import main

sys.exit(main())
