import sys

from avfusion.cli import main

sys.exit(main())
