"""Moments' store: the connector interface and its two implementations (see connector.py)."""

from .connector import Connector, EmbeddedConnector, StoreOptions, open_connector

__all__ = ["Connector", "EmbeddedConnector", "StoreOptions", "open_connector"]
