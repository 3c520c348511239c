"""nanoinfer: a Llama-family inference engine (C++/CUDA). See docs/pseudocode/python.md."""

import os as _os

# The CPU backend's OpenMP threads meet at the end of every op, and libgomp's idle threads spin
# ~300,000 times before they sleep, which stalls every op where another program keeps a core busy.
# libgomp reads its spin count once, when it is loaded: here, by the extension imported below. So,
# as the CLI does, a short spin unless the user chose one (README, "Library and Python"); it takes
# effect only where no module loaded libgomp before this one.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"

from ._nanoinfer import *  # noqa: E402,F401,F403  (the whole API)
from ._nanoinfer import __version__  # noqa: E402,F401


def _reduce_ex(self, protocol):
    return object.__reduce_ex__(self, max(protocol, 2))


# The classes name this package as theirs, not the extension inside it. Pickle protocols 0 and 1
# reduced their objects through copyreg, which constructs the pybind11 base type, and that aborted
# the interpreter: they reduce as protocol 2 does (a class that does not pickle: TypeError).
for _value in list(globals().values()):
    if isinstance(_value, type) and _value.__module__ == __name__ + "._nanoinfer":
        _value.__module__ = __name__
        if not issubclass(_value, BaseException):
            _value.__reduce_ex__ = _reduce_ex
del _value
