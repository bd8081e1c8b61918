"""Compute engines shared by training and batch scoring: Spark sessions (local, standalone, Connect).

Imported lazily: nothing here imports PySpark at module level.
"""
