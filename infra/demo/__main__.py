"""`python -m leadflow_infra.demo` (what `make demo` runs): the scripted week."""

import sys

from leadflow_infra.demo.week import main

sys.exit(main())
