"""The command line, ``python -m core``: one module per command group; each parses, calls core and prints.

May import: everything in core.
"""
