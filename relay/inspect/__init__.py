"""Reading event logs back: per-session summaries (`logs`) and the HTML timeline (`logs --html`)."""
