"""Helpers that run real components (etcd, ...) on this machine.

Used by test fixtures and by ``kubeling up``.
"""
