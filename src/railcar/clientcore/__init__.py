"""What every railcar client shares: how connections are dialled, when to redial, how callers wait.

The request–response clients and the NATS client both build on these pieces rather than
each keeping its own copy.
"""
