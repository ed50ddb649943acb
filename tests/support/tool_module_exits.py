"""A tool module that calls sys.exit while it is imported (a script named as a handler by mistake): `serve` must
refuse it at start like any module that does not import, never exit quietly. Imported only by that test."""

raise SystemExit(0)
