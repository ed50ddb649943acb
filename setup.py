"""The package's compiled parts; everything else about the package is in pyproject.toml.

`relay.eventlog._flatrecord` writes the event log's flat audio record in C (docs/performance.md, "The ninth
round"); `relay.links._wsframes` masks a burst of upstream frames into one buffer ("The twelfth round");
`relay.recording._intake` takes the recording's audio in without Python per chunk: the flood gate's pass ("The
thirteenth round") and the real-time run extender ("The fourteenth round"). All
are optional: without a C compiler the install still succeeds and their Python versions in the same packages give
the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("relay.eventlog._flatrecord", ["relay/eventlog/_flatrecord.c"], optional=True),
        Extension("relay.links._wsframes", ["relay/links/_wsframes.c"], optional=True),
        Extension("relay.recording._intake", ["relay/recording/_intake.c"], optional=True),
    ]
)
