"""Alembic environment of PTMT. Configured from ptmt.db.migrate; never reads alembic.ini.

Online: the caller passes an open connection in ``config.attributes["connection"]``.
Offline (``ptmt db upgrade --sql``): ``config.attributes["offline_url"]`` names the dialect.
"""

from __future__ import annotations

from alembic import context

from ptmt.db.migrate import VERSION_TABLE
from ptmt.db.models import Base, JSONDoc, UTCDateTime

config = context.config


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render PTMT's column types with plain SQLAlchemy names: revisions never import ptmt."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and obj is JSONDoc:
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")  # type: ignore[attr-defined]
        return 'sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")'
    return False


OPTIONS = dict(
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite can only ALTER through table copies
    compare_type=True,
    render_item=render_item,
)

if context.is_offline_mode():
    context.configure(url=config.attributes["offline_url"], literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("PTMT migrations run through ptmt.db.migrate (ptmt db upgrade), "
                           "not through the alembic command")
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
