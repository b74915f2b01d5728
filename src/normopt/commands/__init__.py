"""Subcommands of the ``normopt`` command line (one module each; see ``normopt.cli``)."""
