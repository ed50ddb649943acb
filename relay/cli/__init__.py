"""The command line: argument parsing, settings loading, and one module per subcommand."""
