import sys

from runtime.profile.cli import main

sys.exit(main())
