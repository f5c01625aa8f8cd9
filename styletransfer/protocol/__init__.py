"""The feed-forward model protocol (``model``), its controls (``controls``), evaluation candidates (``candidate``)
and the method registry (``registry``): the one interface between the methods and the applications."""
