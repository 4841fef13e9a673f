"""``railcar load`` and ``railcar stress``: a load generator that reports latency truthfully."""
