"""Tools: the ``fastremask`` command line, ``bench`` and ``profile``."""
