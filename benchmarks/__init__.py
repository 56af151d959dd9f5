"""Benchmarks: pgqueue beside a raw-SQL ceiling, measured in the same run on the same server.

Run ``python -m benchmarks.run [--quick] [--dsn DSN]``; see ``benchmarks/README.md``.
"""
