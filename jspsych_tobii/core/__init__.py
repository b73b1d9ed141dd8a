"""
The pure core: message handling, clocks, the sample buffer and the data
quality maths.  Nothing in this package imports Twisted.
"""
