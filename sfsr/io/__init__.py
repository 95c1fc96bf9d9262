"""Storage (local paths and s3://), image decoding and validation, the face-table schema and
the idempotent table writer. See each module's docstring; the names below are the public API."""

from sfsr.io import images, schema, storage, table
from sfsr.io.images import ImageError, ImageLimits, decode_image, decode_png, encode_png
from sfsr.io.schema import (
    ERROR_SCHEMA,
    SCHEMA_VERSION,
    TableInfo,
    TableSchemaError,
    face_id,
    face_table_schema,
    input_id,
    read_table_info,
    validate_table,
)
from sfsr.io.storage import StorageError, StorageNotFoundError, s3_settings
from sfsr.io.table import CommitResult, commit, read_keys, read_table, staging_uri

__all__ = [
    "images",
    "schema",
    "storage",
    "table",
    "ImageError",
    "ImageLimits",
    "decode_image",
    "decode_png",
    "encode_png",
    "ERROR_SCHEMA",
    "SCHEMA_VERSION",
    "TableInfo",
    "TableSchemaError",
    "face_id",
    "face_table_schema",
    "input_id",
    "read_table_info",
    "validate_table",
    "StorageError",
    "StorageNotFoundError",
    "s3_settings",
    "CommitResult",
    "commit",
    "read_keys",
    "read_table",
    "staging_uri",
]
