"""
The Tobii SDK in a process of its own (C{--sdk-python}).

  - L{jspsych_tobii.trackers.child.tracker}: L{ChildTracker}, the L{ITracker}
    the server uses (reactor side);
  - L{jspsych_tobii.trackers.child.launch}: the child's command line, and
    C{--list-trackers} through a child;
  - L{jspsych_tobii.trackers.child.wire}: the frames both sides exchange;
  - L{jspsych_tobii.trackers.child.main}: the child's main, run by the SDK's
    own interpreter.

This package imports nothing beyond what the child's interpreter has
(Twisted, numpy, zope.interface): the child loads it too.
"""
