"""
Tests for L{jspsych_tobii.server.heap.FrozenHeap}: while the server runs,
what existed at its start is out of the garbage collector's walks; garbage
of that moment is collected, not frozen; stopping hands the objects back.
"""

import gc
import weakref

from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.server.heap import FrozenHeap
from jspsych_tobii.tap import makeService


class Node:
    """A container the collector tracks."""

    def __init__(self):
        self.other = None


def walked(obj):
    """Whether a collection of the oldest generation would walk C{obj}."""
    return any(o is obj for o in gc.get_objects(generation=2))


class FrozenHeapTests(unittest.TestCase):
    def setUp(self):
        if gc.get_freeze_count():
            gc.unfreeze()  # a clean start; the tests freeze as a server would
        self.addCleanup(gc.unfreeze)

    def test_start_freezes_what_exists_and_stop_hands_it_back(self):
        before = Node()
        heap = FrozenHeap()
        heap.startService()
        after = Node()
        gc.collect()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertFalse(walked(before))
        self.assertTrue(walked(after))  # made since: walked as usual
        heap.stopService()
        self.assertEqual(gc.get_freeze_count(), 0)
        gc.collect()
        self.assertTrue(walked(before))

    def test_garbage_at_start_is_collected_not_frozen(self):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        gone = weakref.ref(a)
        del a, b
        heap = FrozenHeap()
        heap.startService()
        self.addCleanup(heap.stopService)
        self.assertIsNone(gone())

    def test_a_freeze_made_before_is_kept(self):
        theirs = Node()
        gc.freeze()
        heap = FrozenHeap()
        heap.startService()
        heap.stopService()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertFalse(walked(theirs))

    def test_the_server_freezes_after_its_other_services_started(self):
        top = makeService(ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True))
        names = [s.name for s in top]
        self.assertEqual(names[-1], "heap")
        self.assertIsInstance(top.getServiceNamed("heap"), FrozenHeap)
