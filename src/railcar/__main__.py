"""Allow ``python -m railcar``."""

from railcar.cli import main

main()
