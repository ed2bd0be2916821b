"""Shared by the utils/ scripts: run one Flask CLI command with this script's arguments."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(*command: str) -> None:
    """Build the app and run `flask <command> <argv>`, exiting with the command's code."""
    from app import create_app

    app = create_app()
    cli = app.cli
    sys.exit(cli.main(args=[*command, *sys.argv[1:]], prog_name=Path(sys.argv[0]).name,
                      obj=None, standalone_mode=True))
