"""PTMT's performance database: schema, migrations and a small storage API.

See ``docs/database.md``. Entry point: :func:`open_storage`.
"""

from ptmt.db.canonical import config_hash, content_hash
from ptmt.db.engine import default_path, mask, resolve_url
from ptmt.db.errors import (
    DatabaseError,
    DatabaseOutdated,
    DatabaseTooNew,
    NotAPtmtDatabase,
    StudyPlanMismatch,
)
from ptmt.db.migrate import head_revision, upgrade
from ptmt.db.models import (
    Backend,
    Configuration,
    Host,
    Sample,
    Study,
    Trial,
    TrialStatus,
    Workload,
)
from ptmt.db.storage import Storage, open_storage, worker_id

__all__ = [
    "Backend", "Configuration", "DatabaseError", "DatabaseOutdated", "DatabaseTooNew", "Host",
    "NotAPtmtDatabase", "Sample", "Storage", "Study", "StudyPlanMismatch", "Trial",
    "TrialStatus", "Workload", "config_hash", "content_hash", "default_path", "head_revision",
    "mask", "open_storage", "resolve_url", "upgrade", "worker_id",
]
