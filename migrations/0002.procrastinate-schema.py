"""Install procrastinate's own schema (tables and functions in `public`) from the pinned package.

When procrastinate is upgraded, add a migration that applies the package's files under
procrastinate/sql/migrations/ between the old and the new version; never edit this one.
"""

from importlib import resources

from yoyo import step

__depends__ = {"0001.roles-and-core-schema"}

steps = [step(resources.files("procrastinate.sql").joinpath("schema.sql").read_text("utf-8"))]
