"""
Run by tests.test_embed: the documented programmatic use, under asyncio.run.
Connects to itself with the stdlib client, prints what it got, stops cleanly.
"""

import asyncio
import json
import sys

from jspsych_tobii import ServerConfig, TobiiServer


async def main(port):
    server = TobiiServer(ServerConfig(host="127.0.0.1", port=port, mock=True, log_level="ERROR"))
    task = asyncio.ensure_future(server.start())
    while server.started is None or not server.started.is_set():
        await asyncio.sleep(0.01)
    from tests.test_cli import websocket_roundtrip

    loop = asyncio.get_running_loop()
    reply = await loop.run_in_executor(
        None, websocket_roundtrip, port, {"type": "get_status", "requestId": "e"}
    )
    print(json.dumps(reply), flush=True)
    server.stop()
    await task
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
