"""The store's option defaults, in one place: the components' signatures (Engine, SDKConnector, WireServer),
StoreOptions and the server's Settings (config.py) take theirs from here. Nothing heavy is imported, so
config can read them."""

# FAISS's OpenMP threads per search. They spin-wait: on a small, busy machine one search with 2 threads
# measured 5-10x slower than with 1, and parallelism comes from concurrent queries anyway (vectors.py).
OMP_THREADS = 1
# HNSW sets insert new vectors into their graph in the background (embedded/indexer.py).
DEFERRED_INDEX = True
# Object rows the embedded engine's read cache keeps (embedded/readcache.py; 0 = off).
READ_CACHE_ROWS = 250_000
# SDK connections to an aperturedb:// store (a worker's to its owner included).
SDK_POOL_SIZE = 8
# The wire listener: connections at once (more are closed at once), and how long a connection that has not
# authenticated yet may take for each frame.
WIRE_MAX_CONNECTIONS = 256
WIRE_PRE_AUTH_TIMEOUT_S = 30.0
