"""``python -m lowres_safety.cli``: the same as the ``lowres-safety`` command."""

from . import main

raise SystemExit(main())
