"""The local adapter registry: one JSON record per trained adapter, an eval gate that decides which one is
active, and the commands that promote, roll back and remove (`python -m engine.adapters --help`).

A record points at its run folder's files (with their sha256); the registry never copies or deletes them.
"""
from engine.adapters.store import Registry, RegistryError

__all__ = ["Registry", "RegistryError"]
