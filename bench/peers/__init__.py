"""Workers and drivers of the systems that bench/run.py measures side by side.

Each module runs inside its own virtualenv (under .bench/, which bench/run.py creates)
with the repository root on PYTHONPATH: `python -m bench.peers.<name> drive ...`.
Only `common` is shared, and it uses the standard library alone.
"""
