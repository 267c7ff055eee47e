"""What every chapter of minivit shares; it imports nothing from the others.

    errors.py   MinivitError and its kinds: every mistake a user can make, as one line
    cli.py      option checking up front (number, integer), one-line errors and exit code 2 (run)
    files.py    writing files atomically, with fsync (atomic_file, atomic_write, write_json), folders, sha256
    device.py   which device, which precision (pick_device, resolve_precision)
    system.py   the OS's plumbing: memory left (cgroups), an ordered thread pool, file locks, private memory maps
    version.py  minivit's version (minivit.__version__, minivit --version)
"""
