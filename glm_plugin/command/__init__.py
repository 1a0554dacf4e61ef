"""The `glm-plugin` command (serve, demo, chat, check, claude-code): engine-neutral, run by users, never by an engine.

`cli` parses the command line and hands each subcommand to its own module; nothing here is imported when an engine
loads the plugin.
"""
