"""``python -m medverse``: the same command line as the ``medverse`` entry point."""

from medverse.cli.main import cli

if __name__ == "__main__":
    cli()
