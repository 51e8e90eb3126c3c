"""Store implementations of the protocols in ``mako_actors.store``.

- ``stores.lmdb.LmdbStore``: the embedded, durable default (one LMDB environment per directory).
- ``stores.memory.InMemoryStore``: the same semantics in memory, for unit tests.
"""
