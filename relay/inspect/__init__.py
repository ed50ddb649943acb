"""Reading event logs back: per-session summaries (`logs`) and the HTML timeline (`logs --html`).

The modules, in the order data flows through them:
- `reader`: finds log files and yields their valid records leniently, counting what it skips.
- `fields`: lenient readers of JSON values, rounding, percentiles.
- `turns` and `ledger`: fold one session's records into turns and latencies, and into errors, retrieves,
  tool calls, saved audio and log gaps.
- `summary`: one analyzer per session over the two folds; `summarize` is the entry point.
- `formats`: labels and number formats every rendering shares.
- `terminal` and `timeline` (with its static `timeline_page`): render summaries as text or as an HTML page.
"""
