"""Regenerate 0001_initial_schema.py from the models.

Used only while the schema has never been deployed; once it has, every change
is a new revision (`flask db migrate`). Runs autogenerate against an empty
SQLite database and swaps the dialect-rendered boolean defaults for portable ones.
"""
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
target = ROOT / "migrations" / "versions" / "0001_initial_schema.py"
target.unlink(missing_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp}/gen.db", "FLASK_APP": "wsgi",
           "TIFFIN_ENV": "development"}
    flask = [sys.executable, "-m", "flask"]
    subprocess.run(flask + ["db", "migrate", "-m", "initial schema", "--rev-id", "0001"],
                   cwd=ROOT, env=env, check=True)
text = target.read_text()
text = text.replace("server_default=sa.text('1')", "server_default=sa.true()")
text = text.replace("server_default=sa.text('0')", "server_default=sa.false()")
text = re.sub(r"Create Date: .*\n", "", text)
target.write_text(text)
print(f"wrote {target.relative_to(ROOT)}")
