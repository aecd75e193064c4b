"""``python -m ssmagent`` is the ``ssmagent`` command."""

from ssmagent.cli import main

main()
