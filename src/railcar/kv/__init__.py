"""A Redis-compatible key–value store and its commands, independent of any wire or engine."""
