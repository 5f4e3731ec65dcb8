"""Benchmarks that run Mailroom against servers they start on this machine.

docs/benchmarks.md records their figures with the machine and command behind them.
"""
