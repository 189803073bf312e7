"""The `adversa` command line: `adversa.cli.main.main(argv)` is the entry point."""
