"""
Run by tests.test_embed: the documented programmatic use, under asyncio.run.

C{embed_child PORT}: starts the server, collects what reaches a C{logging}
handler on the C{jspsych_tobii} logger, connects to itself with the stdlib
client, C{await}s C{server.stop()}, and prints (one JSON object a line) the
reply, the state after the stop, and the log records.

C{embed_child PORT serve}: the README's use as is (C{logging.basicConfig},
then C{asyncio.run(TobiiServer(...).start())}), for a signal to end.

C{embed_child PORT busy}: start() on a port another socket holds; prints
what it raised and what was logged.
"""

import asyncio
import json
import logging
import signal
import sys

from jspsych_tobii import ServerConfig, TobiiServer


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append([record.name, record.levelname, record.getMessage()])


async def main(port):
    records = Records()
    logging.getLogger("jspsych_tobii").addHandler(records)
    logging.getLogger("jspsych_tobii").setLevel(logging.DEBUG)
    server = TobiiServer(ServerConfig(host="127.0.0.1", port=port, mock=True))
    task = asyncio.ensure_future(server.start())
    while server.started is None or not server.started.is_set():
        await asyncio.sleep(0.01)
    from tests.test_cli import websocket_roundtrip

    loop = asyncio.get_running_loop()
    reply = await loop.run_in_executor(
        None, websocket_roundtrip, port, {"type": "get_status", "requestId": "e"}
    )
    print(json.dumps(reply), flush=True)
    await server.stop()
    stopped = {"taskDone": task.done(), "port": server.port}
    await task
    # the bridge is gone: a Twisted log event after the stop reaches no handler
    from twisted.logger import Logger

    before = len(records.records)
    Logger(namespace="jspsych_tobii.after_stop").info("after the stop")
    stopped["recordsAfterStop"] = len(records.records) - before
    print(json.dumps(stopped), flush=True)
    print(json.dumps(records.records), flush=True)


def serve(port):
    # as a terminal gives it (a shell may start background jobs with Ctrl-C ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(TobiiServer(ServerConfig(host="127.0.0.1", port=port, mock=True)).start())
    print("returned", flush=True)


async def busy(port):
    import socket

    records = Records()
    logging.getLogger("jspsych_tobii").addHandler(records)
    logging.getLogger("jspsych_tobii").setLevel(logging.INFO)
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    server = TobiiServer(ServerConfig(host="127.0.0.1", port=port, mock=True))
    try:
        await server.start()
    except Exception as e:
        print(json.dumps({"raised": type(e).__name__}), flush=True)
    print(json.dumps(records.records), flush=True)


if __name__ == "__main__":
    if sys.argv[2:] == ["serve"]:
        serve(int(sys.argv[1]))
    elif sys.argv[2:] == ["busy"]:
        asyncio.run(busy(int(sys.argv[1])))
    else:
        asyncio.run(main(int(sys.argv[1])))
