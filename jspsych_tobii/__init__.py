"""
jspsych-tobii: a Twisted/Autobahn WebSocket server that connects Tobii eye
trackers to jsPsych experiments running in a web browser.

Run it with C{twistd -n jspsych-tobii --mock} or C{jspsych-tobii-server
--mock}, or embed it in an asyncio program::

    import asyncio
    import logging
    from jspsych_tobii import TobiiServer, ServerConfig
    logging.basicConfig(level=logging.INFO)  # its log goes to the "jspsych_tobii" logger
    asyncio.run(TobiiServer(ServerConfig(port=8080, mock=True)).start())  # Ctrl-C ends it

C{await server.stop()} ends it from the program and returns once it is down.
"""

__version__ = "0.2.0"

from jspsych_tobii.config import ConfigError, ServerConfig  # noqa: E402
from jspsych_tobii.embed import TobiiServer  # noqa: E402

__all__ = ["TobiiServer", "ServerConfig", "ConfigError", "__version__"]
