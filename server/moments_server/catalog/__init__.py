"""Moments' data model in ApertureDB: the queries it sends and how their answers are read."""
