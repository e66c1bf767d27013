"""How source columns and Arrow types are named in PostgreSQL (no imports of the stores: migrations use it)."""

import re

import pyarrow as pa


def sql_name(name: str) -> str:
    """A source column name as a PostgreSQL identifier: POL_NUMBER -> pol_number, PolicyNo -> policy_no."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.replace("-", "_"))
    snake = re.sub(r"[^0-9a-zA-Z_]+", "_", snake).strip("_").lower()
    if not snake or snake[0].isdigit():
        snake = f"c_{snake}"
    return snake


def pg_type(dtype: pa.DataType) -> str:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "text"
    if pa.types.is_integer(dtype):
        return "bigint"
    if pa.types.is_decimal(dtype):
        return f"numeric({dtype.precision},{dtype.scale})"
    if pa.types.is_floating(dtype):
        return "double precision"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "bytea"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_boolean(dtype):
        return "boolean"
    raise TypeError(f"no PostgreSQL type for Arrow type {dtype}")
