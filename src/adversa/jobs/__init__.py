"""The assembly layer: what each command does, composed from the algorithms below it.

Each module holds a frozen, typed plan (or one function) per command: the command line
parses its options into it, loads the model and data, runs it and prints the result. The
library user gets the same entry without argparse. Nothing below this package imports it.
"""
