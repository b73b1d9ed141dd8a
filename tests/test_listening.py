"""
Tests for L{jspsych_tobii.server.listening}: the listening port is kept
from the endpoint, and a port that cannot be listened on stops start-up.
"""

from twisted.internet import endpoints, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from jspsych_tobii.server.listening import ListeningService


class ListeningServiceTests(unittest.TestCase):
    def test_port_while_running(self):
        endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        listening = ListeningService(endpoint, Factory.forProtocol(Protocol))
        self.assertIsNone(listening.port)
        listening.startService()
        port = listening.port
        self.assertEqual(port.getHost().host, "127.0.0.1")
        self.assertNotEqual(port.getHost().port, 0)
        d = listening.stopService()
        self.assertIsNone(listening.port)
        return d

    def test_port_taken_fails_start_up(self):
        taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        number = taken.getHost().port
        endpoint = endpoints.serverFromString(reactor, f"tcp:{number}:interface=127.0.0.1")
        listening = ListeningService(endpoint, Factory.forProtocol(Protocol))
        self.assertRaises(CannotListenError, listening.startService)
        self.assertIsNone(listening.port)

    def test_the_server_reads_its_port(self):
        """makeService's server says which port it listens on (here: port 0)."""
        from jspsych_tobii.config import ServerConfig

        from .support import serve

        service, number = serve(self, ServerConfig(mock=True, port="0", host="127.0.0.1"))
        self.assertIs(service.getServiceNamed("websocket"), service.listening)
        self.assertEqual(service.listening.port.getHost().port, number)
        self.assertNotEqual(number, 0)
