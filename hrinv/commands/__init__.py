"""Sub-commands of the ``hrinv`` CLI (see :mod:`hrinv.cli`). Each module: ``HELP``, ``add_arguments``, ``run``."""
