import sys

from hybridsr.client.cli import main

sys.exit(main())
