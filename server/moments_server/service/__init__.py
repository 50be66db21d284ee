"""Application layer: ingest, search and housekeeping on the API's messages, over the core modules."""
