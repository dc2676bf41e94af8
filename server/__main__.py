import sys

from hybridsr.server.cli import main

sys.exit(main())
