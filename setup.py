"""The package's one compiled part; everything else about the package is in pyproject.toml.

`relay.eventlog._flatrecord` writes the event log's flat audio record in C (docs/performance.md, "The ninth
round"). It is optional: without a C compiler the install still succeeds and the Python builder writes every
record, the same bytes.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("relay.eventlog._flatrecord", ["relay/eventlog/_flatrecord.c"], optional=True)])
