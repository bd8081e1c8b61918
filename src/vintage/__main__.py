"""``python -m vintage``: the same as the ``vintage`` console script."""

from vintage.cli.main import run

if __name__ == "__main__":
    run()
