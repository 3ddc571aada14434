"""The local stack's lead-id key: what the template's lead-id secret is in AWS.

Lead ids are derived with a per-deployment secret (HMAC-SHA256), so `leadflow serve`
needs one too: made on the first start in the data directory (`lead-id.key`, 0600, in the
0700 directory), and read on every start after, so a lead keeps its id across restarts.
`LEADFLOW_LEAD_ID_KEY` in the environment overrides it. The key is never logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from leadflow_infra.local.journal import FILE_MODE, secure_directory

KEY_FILE = "lead-id.key"
ENV = "LEADFLOW_LEAD_ID_KEY"


def local_lead_id_key(data_dir: Path | None) -> str:
    """The key the local stack runs with: the environment's, else the data directory's
    (made on first use), else, with no data directory (`--no-persist`), a fresh one."""
    configured = os.environ.get(ENV, "").strip()
    if configured:
        return configured
    if data_dir is None:
        return secrets.token_hex(32)
    path = secure_directory(Path(data_dir)) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return _read(path)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _read(path: Path) -> str:
    os.chmod(path, FILE_MODE)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        # A crash between creating the file and writing it: nothing was derived with it yet.
        path.unlink()
        return local_lead_id_key(path.parent)
    return key
