"""``python -m zf_attr``: the ``zf-attr`` command line (see :mod:`zf_attr.cli`)."""

from zf_attr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
