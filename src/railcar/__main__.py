"""Allow ``python -m railcar``."""

from railcar.cli import main

if __name__ == "__main__":
    main()
