"""
A small HTTP client for loopback tests: one request per connection, the
path sent exactly as given (no normalisation of C{..} or C{%2e}).
"""

from dataclasses import dataclass
from typing import Dict, Optional

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


@dataclass
class Response:
    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name.encode())
        return values[0].decode() if values else None


@defer.inlineCallbacks
def request(
    port: int,
    path: str,
    method: str = "GET",
    headers: Optional[Dict[str, str]] = None,
    body: Optional[bytes] = None,
    timeout: float = 10.0,
):
    """Fires with a L{Response}."""
    agent = Agent(reactor)
    url = f"http://127.0.0.1:{port}{path}".encode("ascii")
    raw = Headers({k: [v] for k, v in (headers or {}).items()})
    d = agent.request(method.encode(), url, raw, None if body is None else _Body(body))
    response = yield d.addTimeout(timeout, reactor)
    data = yield readBody(response)
    return Response(response.code, response.headers, data)
