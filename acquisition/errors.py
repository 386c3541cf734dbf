"""The one base class of the errors talbot-lau raises on purpose.

Every such error (bad input, a broken file, a refused or failed run) is a
:class:`TalbotLauError` mixed into the builtin type it refines (``ValueError``, ``OSError``,
``RuntimeError``), as ophyd's and caproto's errors are: ``except TalbotLauError`` catches
them all, ``except ValueError`` still catches a bad argument.  The command line catches it
once (``acquisition.cli``).
"""


class TalbotLauError(Exception):
    """Base of every error talbot-lau raises on purpose."""
