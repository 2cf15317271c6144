#!/usr/bin/env bash
# Prints the path of a working Python 3.10 interpreter: `python3.10` on PATH
# first, then pyenv's 3.10.x. Fails with a clear message if there is none.
# (A pyenv shim named python3.10 can exist without a 3.10 selected, so each
# candidate is actually run, not just looked up.)
set -u
is_310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }

if command -v python3.10 >/dev/null 2>&1 && is_310 python3.10; then
  command -v python3.10; exit 0
fi
roots=()
if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root)"); fi
roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
for root in "${roots[@]}"; do
  for candidate in $(ls -d "$root"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V -r); do
    if is_310 "$candidate"; then echo "$candidate"; exit 0; fi
  done
done
cat >&2 <<'MSG'
error: Python 3.10 not found.
  This project pins TFX 1.16, which supports Python 3.9-3.10, and TFDS 4.9.7, which needs 3.10.
  Looked for: `python3.10` on PATH, then $(pyenv root)/versions/3.10.*/bin/python3.10.
  Install one, e.g. `pyenv install 3.10` or your OS package `python3.10 python3.10-venv`,
  or set PYTHON=/path/to/python3.10 when calling make.
MSG
exit 1
