"""Tables in SQL databases: read them into Arrow, write Arrow into them atomically.

engine.py (engines, read errors), columns.py (database <-> Arrow types), reads.py (`read_sql`), postgres_copy.py
(COPY TO STDOUT, whole or streamed), shards.py (parallel key-range reads), writes.py (`write_tables`: staging table,
widening, atomic swap), loaders.py (COPY FROM STDIN, LOAD DATA LOCAL INFILE, executemany), rejects.py (the
`<table>__rejects` table). The names importers use are re-exported here.
"""

from .engine import engine_for, raw_quote
from .loaders import LoadPiece
from .postgres_copy import POSTGRES_BOOLEANS, CopyStream, postgres_copy_stream
from .reads import read_sql
from .rejects import REJECTS_COLUMNS, REJECTS_SUFFIX, read_rejects, rejects_table_name
from .shards import Shard, iter_sql_shards, split_points
from .writes import TypesWidened, WrittenTable, write_table, write_tables

__all__ = [
    "POSTGRES_BOOLEANS",
    "REJECTS_COLUMNS",
    "REJECTS_SUFFIX",
    "CopyStream",
    "LoadPiece",
    "Shard",
    "TypesWidened",
    "WrittenTable",
    "engine_for",
    "iter_sql_shards",
    "postgres_copy_stream",
    "raw_quote",
    "read_rejects",
    "read_sql",
    "rejects_table_name",
    "split_points",
    "write_table",
    "write_tables",
]
