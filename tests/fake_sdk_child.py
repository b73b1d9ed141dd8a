"""
The fake SDK a child process builds (C{--sdk tests.fake_sdk_child:fake_sdk}):
L{tests.fake_tobii_research} with the devices and scripted events that the
parent test put in the child's environment, as JSON.  Kept apart from the
tests so that the child imports no more than it needs: every test of a real
SDK process starts one.
"""

import json
import os
import signal
import threading

from . import fake_tobii_research as fake

#: The checkout's root (the directory the child adds to its path).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Options of L{fake_sdk}, as JSON, in the child's environment.
FAKE_ENV = "JSPSYCH_TOBII_TEST_FAKE_SDK"
#: The C{--sdk} that loads it.
FAKE = "tests.fake_sdk_child:fake_sdk"


def fake_sdk():
    """
    Called in the child: the fake SDK with devices and scripted events as
    the environment says.
    """
    options = json.loads(os.environ.get(FAKE_ENV) or "{}")
    version = options.get("version", "2.x")
    sdk = fake.make_sdk(version)
    for _ in range(options.get("devices", 1)):
        frequency = options.get("frequency") or (600.0 if version == "2.x" else 300.0)
        device = sdk.add_device(frequency=frequency)
        device.collect_seconds = options.get("collect_seconds", 0.05)
    sdk.clock_offset_us = options.get("clock_offset_us", 0)
    for stream, keys in (options.get("missing_fields") or {}).items():
        sdk.device().missing_fields[stream] = tuple(keys)
    if options.get("signals"):
        # The parent test decides when: SIGUSR1 loses the connection,
        # SIGUSR2 restores it (each on a thread, as the SDK's own events come).
        device = sdk.device()
        for number, event in (
            (signal.SIGUSR1, device.lose_connection),
            (signal.SIGUSR2, device.restore_connection),
        ):
            signal.signal(number, lambda *_, event=event: threading.Thread(target=event).start())
    if options.get("noisy"):
        # Neither may reach the frame pipe.
        print("a print() from the SDK")
        os.write(1, b"bytes written to descriptor 1 by native code\n")
    if options.get("deaf"):
        # The child no longer sees its stdin close: only a kill ends it.
        read, _ = os.pipe()
        os.dup2(read, 0)
    return sdk
