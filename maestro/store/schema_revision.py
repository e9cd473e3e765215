"""The schema revision this code reads and writes (apart from schema.py, so services
can check it without importing SQLAlchemy)."""

# The Alembic revision of maestro/store/migrations/versions/ that matches this code. A
# service refuses a database at any other revision; `maestro db upgrade` brings a
# database to it. A unit test checks it is the migrations' head.
SCHEMA_REVISION = "0004"
