"""One module per subcommand group of `rationale-audit`."""
