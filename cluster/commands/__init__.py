"""CLI commands beyond run/status/kill-switch: one module each, exposing `register(subparsers)`.

A command's handler takes the parsed `argparse.Namespace` and returns an exit code;
it raises `cluster.cli.CliError` or `ConfigError` for anything the user got wrong.
"""
