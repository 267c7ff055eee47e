"""``python -m minivit.hub``: the hub command, minivit/commands/hub.py (the rule: minivit/commands/__init__.py)."""

if __name__ == "__main__":
    from minivit.commands import run_command

    raise SystemExit(run_command("hub"))
