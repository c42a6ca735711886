"""The `maskgan` command, the top floor of the house: it parses and dispatches; the work is done below it."""
