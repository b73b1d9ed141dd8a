"""
Keeps liblsl on this machine for the tests.

liblsl reads its configuration once, from the file named by C{LSLAPICFG},
when it first needs it.  Importing this module (before anything creates an
LSL stream) writes a configuration that limits stream discovery to this
machine (C{ResolveScope = machine}: multicast on the loopback interface
only, so no packet leaves the host) and names it in C{LSLAPICFG}.  Every test
module that creates LSL streams imports it first.
"""

import atexit
import os
import shutil
import tempfile

CONFIG = """\
; written by the jspsych-tobii tests: discovery and data stay on this machine
[multicast]
ResolveScope = machine
[log]
; fatal errors only (liblsl logs connections, and inlets losing a closed outlet)
level = -3
"""


def configure() -> str:
    """Write the configuration and point C{LSLAPICFG} at it; returns its path."""
    folder = tempfile.mkdtemp(prefix="jspsych-tobii-lsl-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "lsl_api.cfg")
    with open(path, "w") as f:
        f.write(CONFIG)
    os.environ["LSLAPICFG"] = path
    return path


CONFIG_PATH = configure()
