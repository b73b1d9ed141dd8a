"""
Run by tests.test_shutdown: the whole server, as jspsych-tobii-server runs
it, over the Tobii adapter and the fake SDK (a 1200 Hz device), until
SIGTERM.  After the reactor stops it prints, as JSON, what the fake SDK
saw: subscriptions left open and unsubscribe calls.

    python -m tests.tobii_server_child PORT
"""

import json
import sys

from twisted.internet import reactor

from jspsych_tobii import logs
from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core.timesync import monotonic_us
from jspsych_tobii.tap import makeService
from jspsych_tobii.trackers.tobii import TobiiTracker
from tests import fake_tobii_research as fake


def main(port):
    sdk = fake.make_sdk("2.x")
    sdk.add_device(frequency=1200)
    config = ServerConfig(host="127.0.0.1", port=str(port), log_level="WARNING")
    logs.start_logging("WARNING", stream=sys.stderr)
    service = makeService(
        config, reactor, make_tracker=lambda: TobiiTracker(reactor, monotonic_us, sdk=sdk)
    )
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()
    device = sdk.device()
    print(
        json.dumps(
            {
                "open_subscriptions": len(device.subscriptions()),
                "unsubscribed": len(sdk.calls_named("unsubscribe_from")),
                "subscribed": len(sdk.calls_named("subscribe_to")),
            }
        ),
        flush=True,
    )
    sdk.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
