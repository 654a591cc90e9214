"""Reliability campaigns (issue 7): crashes, duplicate releases, store and database faults,
bad input. `make reliability` runs them in full and writes docs/reliability.md; tests in
tests/integration/test_reliability.py run a short version of each and hold it to its targets.
"""
