"""``python -m zf_attr.cli``: the same as the ``zf-attr`` command."""

from zf_attr.cli import main

raise SystemExit(main())
