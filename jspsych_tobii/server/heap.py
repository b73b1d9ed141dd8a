# -*- test-case-name: tests.test_heap -*-
"""
L{FrozenHeap}: Python's garbage collector must not stall the reactor.

A full collection of the cyclic garbage collector walks every container
object in the process, on whichever thread's allocation set it off (the
reactor's, or a worker's that holds the GIL meanwhile).  Once the server is
up, that is ~65,000 objects (Twisted, Autobahn, numpy and the rest, as
imported and built) and took 35 to 60 ms on a loaded 2-core machine: a
stall of every client's gaze, at times a client can bring about (decoding
a large request makes many objects; bench/bench_hostile.py,
C{validation_refused}).  None of those objects becomes garbage while the
server runs, so once the other services have started, L{FrozenHeap} runs
one full collection and moves what survives out of the collector's sight
(C{gc.freeze}); later collections walk only what was made since, well under
a millisecond when the server is idle.  On stop the frozen objects are
handed back (C{gc.unfreeze}), unless something else of the process had
frozen objects before, which it then keeps frozen.
"""

from __future__ import annotations

import gc

from twisted.application import service


class FrozenHeap(service.Service):
    name = "heap"  # type: ignore[assignment]  # Twisted declares it None

    _froze = False

    def startService(self) -> None:
        super().startService()
        self._froze = gc.get_freeze_count() == 0
        gc.collect()  # what is garbage now is not kept forever
        gc.freeze()

    def stopService(self) -> None:
        super().stopService()
        if self._froze:
            gc.unfreeze()
            self._froze = False
