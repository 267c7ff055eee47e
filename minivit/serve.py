"""``python -m minivit.serve``: the serve command, minivit/commands/serve.py (the rule: minivit/commands/__init__.py)."""

if __name__ == "__main__":
    from minivit.commands import run_command

    raise SystemExit(run_command("serve"))
