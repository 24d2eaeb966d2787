"""``python -m steplaw_db.cli``: the ``steplaw-db`` command."""

from ._app import main

main()
