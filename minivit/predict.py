"""``python -m minivit.predict``: the predict command, minivit/commands/predict.py (the rule: minivit/commands/__init__.py)."""

if __name__ == "__main__":
    from minivit.commands import run_command

    raise SystemExit(run_command("predict"))
