"""The commands, one light module each (standard library only until there is work, so ``--help`` answers at once);
each is a console script (``pyproject.toml``'s ``[project.scripts]``)."""
