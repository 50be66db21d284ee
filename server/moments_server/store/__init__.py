"""Moments' store: the connector interface and its two implementations (see connector.py)."""

from .connector import Connector, EmbeddedConnector, open_connector

__all__ = ["Connector", "EmbeddedConnector", "open_connector"]
