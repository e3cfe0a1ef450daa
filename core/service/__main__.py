"""`python -m core.service` = `python -m core serve` (see core/service/__init__.py)."""
import sys

from core.service import main

sys.exit(main())
